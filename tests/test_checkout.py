"""The harness checkout: its commit (MLflow's tag, provenance) and whether it has local edits."""

from harness import checkout


def test_the_commit_is_the_checkout_head_and_dirty_says_whether_edits_sit_on_it():
    commit = checkout.git_commit()
    assert commit is None or (len(commit) == 40 and int(commit, 16) >= 0)
    assert checkout.git_dirty() in ((None,) if commit is None else (True, False))


def test_without_git_both_are_unknown(monkeypatch):
    def no_git(*args, **kwargs):
        raise FileNotFoundError("git")

    monkeypatch.setattr(checkout.subprocess, "run", no_git)
    assert checkout.git_commit() is None and checkout.git_dirty() is None
