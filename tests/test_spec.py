"""Sweep specs: shipped specs load; typos and wrong types name the file and the key."""

import pytest
import yaml

from harness.errors import SpecError
from harness.spec import load_spec, store_uris
from tests.conftest import REPO, spec_dict, write_spec


def test_shipped_specs_load(monkeypatch):
    monkeypatch.chdir(REPO)
    tiny = load_spec("canary-tiny")
    big = load_spec("canary-180m")
    # The demo searches enough settings to compare and confirms more than one of them (a decision with a runner-up).
    assert tiny.model == "canary-tiny" and tiny.budget.trials >= 4
    assert tiny.budget.confirm is not None and tiny.budget.confirm.top >= 2
    assert big.model == "canary-180m" and big.budget.max_steps > tiny.budget.max_steps
    assert big.budget.confirm is not None  # the shipped real sweep confirms by default (issue 21)
    assert tiny.direction == "minimize"
    assert tiny.tracking_uri.startswith("sqlite:///") and tiny.tracking_uri.endswith("mlruns/mlflow.db")


def test_unknown_key_names_file_and_key(project):
    spec = spec_dict({"train": "t.json", "validation": "v.json"})
    spec["budget"]["max_step"] = 10
    write_spec(project, "typo", spec)
    with pytest.raises(SpecError, match=r"sweeps/typo.yaml: unknown key `budget.max_step`"):
        load_spec("typo")


def test_wrong_type_and_literal(project):
    spec = spec_dict({"train": "t.json", "validation": "v.json"}, budget={"trials": "six"})
    write_spec(project, "bad", spec)
    with pytest.raises(SpecError, match=r"`budget.trials` must be int"):
        load_spec("bad")
    spec = spec_dict({"train": "t.json", "validation": "v.json"}, objective={"metric": "cer"})
    write_spec(project, "bad", spec)
    with pytest.raises(SpecError, match=r"`objective.metric` is 'cer'; use one of wer, wer_normalized, bleu, mix"):
        load_spec("bad")


def test_missing_required_key_and_missing_file(project):
    spec = spec_dict({"train": "t.json", "validation": "v.json"})
    del spec["data"]["validation"]
    write_spec(project, "nodata", spec)
    with pytest.raises(SpecError, match=r"missing required key `data.validation`"):
        load_spec("nodata")
    with pytest.raises(SpecError, match=r"No sweep spec sweeps/nope.yaml"):
        load_spec("nope")


def test_environment_supplies_storage_and_tracking(project, monkeypatch):
    write_spec(project, "env", spec_dict({"train": "t.json", "validation": "v.json"}))
    monkeypatch.setenv("HARNESS_STORAGE", "postgresql://u@db/optuna")
    monkeypatch.setenv("HARNESS_TRACKING_URI", "http://127.0.0.1:5000")
    spec = load_spec("env")
    assert spec.storage_url == "postgresql://u@db/optuna"
    assert spec.tracking_uri == "http://127.0.0.1:5000"
    (project / "sweeps" / "env.yaml").write_text(
        yaml.safe_dump({**spec_dict({"train": "t", "validation": "v"}), "storage": "sqlite:///x.db"})
    )
    assert load_spec("env").storage_url == "sqlite:///x.db"


def test_the_command_line_wins_then_the_spec_then_the_environment_then_mlruns(project, monkeypatch):
    data = {"train": "t", "validation": "v"}
    write_spec(project, "uris", spec_dict(data, storage="sqlite:///spec.db", tracking={"uri": "http://spec:5000"}))
    write_spec(project, "plain", spec_dict(data))
    monkeypatch.setenv("HARNESS_STORAGE", "postgresql://u@env/optuna")
    monkeypatch.setenv("HARNESS_TRACKING_URI", "http://env:5000")
    spec = load_spec("uris")
    assert store_uris(spec) == ("sqlite:///spec.db", "http://spec:5000")
    assert store_uris(spec, storage="postgresql://u@cli/optuna") == ("postgresql://u@cli/optuna", "http://spec:5000")
    assert store_uris(load_spec("plain")) == ("postgresql://u@env/optuna", "http://env:5000")

    plain = load_spec("plain")
    plain.use_stores(storage=None, tracking_uri="http://job:5000")  # a trial job's URIs, fixed for the process
    monkeypatch.delenv("HARNESS_STORAGE")
    monkeypatch.delenv("HARNESS_TRACKING_URI")
    assert (plain.storage_url, plain.tracking_uri) == ("postgresql://u@env/optuna", "http://job:5000")
    mlruns = project / "mlruns"
    assert store_uris(load_spec("plain")) == (f"sqlite:///{mlruns / 'optuna.db'}", f"sqlite:///{mlruns / 'mlflow.db'}")


def test_devices_per_trial_must_be_on_one_host(project):
    # `devices: 2` is a DDP trial on 2 devices; 0 devices or a trial across hosts is refused on load.
    data = {"train": "t.json", "validation": "v.json"}
    write_spec(project, "two", spec_dict(data, training={"devices": 2}))
    assert load_spec("two").training.devices == 2
    write_spec(project, "none", spec_dict(data, training={"devices": 0}))
    with pytest.raises(SpecError, match=r"^sweeps/none.yaml: `training.devices` is 0; it must be at least 1"):
        load_spec("none")
    write_spec(project, "nodes", spec_dict(data, training={"num_nodes": 2}))
    with pytest.raises(SpecError) as error:
        load_spec("nodes")
    message = str(error.value)
    assert message.startswith("sweeps/nodes.yaml: `training.num_nodes` is 2, but a trial runs on one host")
    assert "training.devices" in message and "harness launch" in message


RETENTION_RULE = (
    "a fraction of at least 0 (0.05: up to 5 WER points above the zero-shot baseline's retention WER), or null"
)


# A number of the right type but out of range stopped or broke every trial, late (or never ran one).
@pytest.mark.parametrize(
    ("section", "key", "value", "rule"),
    [
        ("budget", "max_steps", 0, "at least 1 (training steps per trial)"),
        ("budget", "max_steps", -5, "at least 1 (training steps per trial)"),
        ("budget", "val_check_interval", 0, "at least 1 (steps between validations)"),
        ("budget", "trials", 0, "at least 1 (trials in total, across runs and workers)"),
        ("budget", "timeout_minutes", 0, "a number of minutes > 0, or null for no wall-clock limit"),
        ("budget", "warmup_fraction", 1.0, "at least 0 and below 1 (the share of max_steps)"),
        ("budget", "warmup_fraction", float("nan"), "at least 0 and below 1 (the share of max_steps)"),
        ("budget", "max_retries", -1, "at least 0"),
        ("pruner", "n_warmup_steps", -1, "at least 0, or null for each trial's learning-rate warm-up"),
        ("training", "validation_batch_size", 0, "at least 1"),
        ("training", "max_duration", 0, "a number of seconds > 0"),
        ("objective", "retention_max_wer_increase", float("inf"), RETENTION_RULE),
        # Accepted before: every trial then broke it after training (a new domain does not improve the old one).
        ("objective", "retention_max_wer_increase", -0.1, RETENTION_RULE),
    ],
)
def test_out_of_range_numbers_name_the_key_on_load(project, section, key, value, rule):
    write_spec(project, "bad", spec_dict({"train": "t.json", "validation": "v.json"}, **{section: {key: value}}))
    with pytest.raises(SpecError) as caught:
        load_spec("bad")
    message = str(caught.value)
    assert message.startswith(f"sweeps/bad.yaml: `{section}.{key}` is ") and message.endswith(f"; it must be {rule}.")


def test_min_duration_must_be_below_max_duration(project):
    spec = spec_dict({"train": "t.json", "validation": "v.json"}, training={"min_duration": 5, "max_duration": 5})
    write_spec(project, "bad", spec)
    with pytest.raises(SpecError, match=r"`training.min_duration` \(5s\) must be below `training.max_duration`"):
        load_spec("bad")


def test_misspelt_accelerator_is_refused_on_load(project):
    write_spec(project, "bad", spec_dict({"train": "t.json", "validation": "v.json"}, training={"accelerator": "gpus"}))
    with pytest.raises(SpecError, match=r"`training.accelerator` is 'gpus'; use one of auto, cpu, gpu, cuda"):
        load_spec("bad")


def test_non_utf8_spec_names_file_and_line(project):
    text = yaml.safe_dump(spec_dict({"train": "t.json", "validation": "v.json"}))
    (project / "sweeps" / "latin.yaml").write_bytes(b"# r\xe9glages\n" + text.encode())
    with pytest.raises(SpecError) as caught:
        load_spec("latin")
    assert str(caught.value) == (
        "sweeps/latin.yaml:1: not UTF-8 text (byte 0xe9 at column 4); save the file as UTF-8 "
        "(for Latin-1 text: `iconv -f latin1 -t utf-8 sweeps/latin.yaml > fixed.yaml`)."
    )


def test_a_behaviour_name_must_be_usable_in_metric_names(project):
    """`val_wer/<name>_on` names a metric: a name MLflow refuses would fail every trial at its first validation."""
    tokens = {"on": "<|spltoken0|>", "off": "<|spltoken1|>", "field": "terse"}
    data = {"train": "t.json", "validation": "v.json"}
    write_spec(project, "named", spec_dict(data, behaviours={"be terse!": tokens}))
    with pytest.raises(SpecError) as error:
        load_spec("named")
    assert "sweeps/named.yaml: `behaviours.be terse!` is not a usable behaviour name" in str(error.value)
    assert "letters, digits, `_`, `-` and `.` only" in str(error.value)
    write_spec(project, "named", spec_dict(data, behaviours={"terse-v2.1": tokens}))
    assert list(load_spec("named").behaviours) == ["terse-v2.1"]


def test_the_old_behaviours_key_still_loads_with_one_warning(project, capsys):
    """`custom_tokens:` is read as `behaviours:`, with one warning line per file naming the new key."""
    tokens = {"terse": {"on": "<|spltoken0|>", "off": "<|spltoken1|>", "field": "terse"}}
    data = {"train": "t.json", "validation": "v.json"}
    write_spec(project, "old", spec_dict(data, custom_tokens=tokens))
    assert list(load_spec("old").behaviours) == ["terse"]
    assert list(load_spec("old").behaviours) == ["terse"]
    warning = "warning: sweeps/old.yaml: `custom_tokens` is deprecated; rename it to `behaviours`.\n"
    assert capsys.readouterr().err == warning
    write_spec(project, "both", spec_dict(data, custom_tokens=tokens, behaviours=tokens))
    with pytest.raises(SpecError, match=r"^sweeps/both.yaml: `custom_tokens` and `behaviours` are the same key"):
        load_spec("both")


def test_retention_manifests_and_their_limit(project):
    """`data.retention` takes one path or a list; the limit compares with the baseline's retention WER,
    so it needs both, named on load."""
    data = {"train": "t.json", "validation": "v.json"}
    write_spec(project, "one", spec_dict(data, data={"retention": "old.json"}))
    assert load_spec("one").data.retention == ["old.json"]
    write_spec(project, "two", spec_dict(data, data={"retention": ["a.json", "b.json"]}))
    assert load_spec("two").data.retention == ["a.json", "b.json"]
    assert load_spec(write_spec(project, "none", spec_dict(data))).data.retention == []

    limit = {"retention_max_wer_increase": 0.05}
    write_spec(project, "nodata", spec_dict(data, budget={"baseline": True}, objective=limit))
    with pytest.raises(SpecError) as caught:
        load_spec("nodata")
    assert str(caught.value) == (
        "sweeps/nodata.yaml: `objective.retention_max_wer_increase` needs retention manifests to score: add "
        "`data.retention` (manifests of the model's old domain), or remove the limit."
    )
    write_spec(project, "nobase", spec_dict(data, data={"retention": "old.json"}, objective=limit))
    with pytest.raises(SpecError, match=r"^sweeps/nobase.yaml: `objective.retention_max_wer_increase` is measured"):
        load_spec("nobase")  # spec_dict turns the baseline off
    write_spec(
        project, "ok", spec_dict(data, data={"retention": "old.json"}, budget={"baseline": True}, objective=limit)
    )
    assert load_spec("ok").objective.retention_max_wer_increase == 0.05
    strict = spec_dict(
        data, data={"retention": "old.json"}, budget={"baseline": True}, objective={"retention_max_wer_increase": 0}
    )
    assert load_spec(write_spec(project, "strict", strict)).objective.retention_max_wer_increase == 0  # no forgetting
    write_spec(project, "typed", spec_dict(data, data={"retention": [3]}))
    with pytest.raises(SpecError, match=r"`data.retention\[0\]` must be str, not 3"):
        load_spec("typed")
