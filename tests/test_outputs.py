"""Output folders named on the command line: a file in the way is one sentence naming the option and the file.

`harness export --out` has its own test in test_export.py; these are the other commands that write where the
user says (or where the report goes). Real folders and files; nothing is trained or synthesised.
"""

from __future__ import annotations

from pathlib import Path

from harness.cli import main
from harness.outputs import blocking_file
from tests.conftest import spec_dict, write_spec


def _one_error(capsys) -> str:
    out = capsys.readouterr().out
    assert out.startswith("error:") and "Traceback" not in out, out
    return " ".join(out.split())


def test_demo_data_out_through_a_file(project, capsys):
    """Ended in NotADirectoryError from unlinking the corpus stamp, for `--out notes.txt` and anything below it."""
    (project / "notes.txt").write_text("not a folder")
    for out in ("notes.txt", "notes.txt/demo"):
        assert main(["demo-data", "--out", out]) == 2
        assert _one_error(capsys) == (
            f"error: Cannot write `--out {out}`: notes.txt is a file, not a folder; choose another path, or move "
            "the file away."
        )


def test_report_folder_through_a_file(project, capsys):
    """`mlruns/reports` as a file ended in NotADirectoryError after the summary was printed; now before it."""
    name = write_spec(project, "reported", spec_dict({"train": "t.json", "validation": "v.json"}))
    (project / "mlruns").mkdir()
    (project / "mlruns" / "reports").write_text("")
    assert main(["report", name]) == 2
    folder = project / "mlruns" / "reports" / name
    assert _one_error(capsys) == (
        f"error: Cannot write the report to {folder}: {project / 'mlruns' / 'reports'} is a file, not a folder; "
        "move the file away."
    )


def test_blocking_file_is_the_first_file_on_the_way_up(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "b").write_text("")
    assert blocking_file(tmp_path / "a" / "b" / "c" / "d") == tmp_path / "a" / "b"
    assert blocking_file(tmp_path / "a" / "new" / "d") is None
    assert blocking_file(Path("/")) is None
