"""`harness report <sweep>`: the decision "fine-tune with these settings", with the evidence behind it.

The console gets the short version (best trial against the baseline, every trial in a table).
`write_report` also writes `mlruns/reports/<sweep>/`: `report.md`, a self-contained `report.html`
(plots embedded), `best.yaml` (the best trial's full NeMo config and the command that re-runs
it) and the plots, and logs them on the sweep's MLflow parent run under `report/`. The content is
built once as a list of blocks and rendered twice, so Markdown and HTML never disagree.

Callers import from here, never from a private module:

- `_summary`: the study read back (`SweepSummary`, `summarize`), trials in order, the baseline verdict;
- `_console`: the console view (`print_report`, the rich trials table);
- `_blocks`: the kinds of block a page is made of (heading, text, table, code, image);
- `_document`: the page's content as blocks (decision, evidence, spec, provenance);
- `_behaviours`: the custom behaviours section (each behaviour on and off, zero-shot against the trials);
- `_render`: those blocks as Markdown and as self-contained HTML;
- `_publish`: `write_report`, i.e. the files on disk (page, plots, `best.yaml`) and on MLflow.
"""

from harness.report._blocks import Block, Code, Heading, Image, Table, Text
from harness.report._console import memory_table, mlflow_ui_command, print_report, trials_table
from harness.report._document import (
    build_blocks,
    export_command,
    objective_text,
    reproduce_command,
)
from harness.report._publish import (
    ARTIFACT_PATH,
    BEST_CONFIG,
    REPORTS_DIR,
    ReportFiles,
    log_report,
    make_plots,
    report_dir,
    write_best_config,
    write_report,
)
from harness.report._render import to_html, to_markdown
from harness.report._summary import (
    FINAL_COLUMNS,
    PruningSavings,
    SweepSummary,
    baseline_verdict,
    memory_rows,
    ordered_trials,
    pruning_savings,
    summarize,
    trial_note,
    trial_rows,
    trial_steps,
)

__all__ = [
    "ARTIFACT_PATH",
    "BEST_CONFIG",
    "FINAL_COLUMNS",
    "REPORTS_DIR",
    "Block",
    "Code",
    "Heading",
    "Image",
    "PruningSavings",
    "ReportFiles",
    "SweepSummary",
    "Table",
    "Text",
    "baseline_verdict",
    "build_blocks",
    "export_command",
    "log_report",
    "memory_table",
    "make_plots",
    "memory_rows",
    "mlflow_ui_command",
    "objective_text",
    "ordered_trials",
    "print_report",
    "pruning_savings",
    "report_dir",
    "reproduce_command",
    "summarize",
    "to_html",
    "to_markdown",
    "trial_note",
    "trial_rows",
    "trial_steps",
    "trials_table",
    "write_best_config",
    "write_report",
]
