"""`harness report <sweep>`: the decision "fine-tune with these settings", with the evidence behind it.

The console gets the short version (best trial against the baseline, every trial in a table).
`write_report` also writes `mlruns/reports/<sweep>/`: `report.md`, a self-contained `report.html`
(plots embedded), `best.yaml` (the best trial's full NeMo config and the command that re-runs
it) and the plots, and logs them on the sweep's MLflow parent run under `report/`. The content is
built once as a list of blocks and rendered twice, so Markdown and HTML never disagree.

The public names are what the harness calls (the `report` and `sweep` verbs, and `export`'s choice of
trial); tests import the private module they test. Reading a study builds no pruner and loads neither
torch nor Lightning (a test guards it). The modules, in import order:

- `_summary`: the study read back (`SweepSummary`, `summarize`), trials in order, the baseline verdict;
- `_comparison`: the best trial's figures against the zero-shot baseline's, one row builder for every such table;
- `_retention`: in-domain gain against retention loss (each trial's retention WER, notes, verdict, rows);
- `_trials`: the all-trials table, shared by the console and the page;
- `_behaviours`: the custom behaviours section (each behaviour on and off, zero-shot against the trials);
- `_console`: the console view (`print_report`, the rich trials table);
- `_blocks`: the kinds of block a page is made of (heading, text, table, code, image);
- `_document`: the page's content as blocks (decision, evidence, spec, provenance);
- `_render`: those blocks as Markdown and as self-contained HTML;
- `_publish`: `write_report`, i.e. the files on disk (page, plots, `best.yaml`) and on MLflow.
"""

from harness.report._console import print_report
from harness.report._publish import report_dir, write_report
from harness.report._summary import summarize

__all__ = ["print_report", "report_dir", "summarize", "write_report"]
