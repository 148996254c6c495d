"""Search spaces: only knobs the trial applies, valid distributions, readable values."""

import optuna.distributions as od
import pytest
import yaml

from harness.errors import SpecError
from harness.search_space import format_param, load_search_space
from tests.conftest import REPO


def test_shipped_space_has_the_four_canary_knobs():
    space = load_search_space(REPO / "search_spaces" / "canary-finetune.yaml")
    assert set(space) == {"lr", "batch_duration", "freeze", "use_loss_mask_for_prompt"}
    assert isinstance(space["lr"], od.FloatDistribution) and space["lr"].log
    assert set(space["freeze"].choices) == {"none", "encoder", "encoder_bn_se", "all_but_bn_se"}


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"dropout": {"type": "float", "low": 0, "high": 1}}, "unknown parameter `dropout`"),
        ({"lr": {"type": "float", "low": 1e-3}}, "`lr` is missing `high`"),
        ({"lr": {"type": "gaussian", "low": 0, "high": 1}}, "`lr.type` is 'gaussian'"),
        ({"freeze": {"type": "categorical", "choices": ["decoder"]}}, "`freeze` choice 'decoder' is unknown"),
    ],
)
def test_invalid_spaces_are_rejected_with_the_key(tmp_path, entry, message):
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump(entry))
    with pytest.raises(SpecError, match=message):
        load_search_space(path)


def _cat(*choices):
    return {"type": "categorical", "choices": list(choices)}


def _range(kind="float", **bounds):
    return {"type": kind, **bounds}


# Each of these loaded (or failed with Optuna's words) before; a wrong-typed choice trained on a
# value other than the one recorded (`bool("false")` is True), an out-of-range one failed every trial.
@pytest.mark.parametrize(
    ("name", "entry", "message"),
    [
        (
            "use_loss_mask_for_prompt",
            _cat("false"),
            "`use_loss_mask_for_prompt` choice 'false' is text, not a boolean (the trial would read any non-empty "
            "text as true); write true or false without quotes.",
        ),
        ("use_loss_mask_for_prompt", _cat(True, "maybe"), "`use_loss_mask_for_prompt` choice 'maybe' is text"),
        ("use_loss_mask_for_prompt", _cat(1), "choice 1 is not allowed; `use_loss_mask_for_prompt` must be true or"),
        ("use_loss_mask_for_prompt", _range(low=0, high=1), "must be `type: categorical` with choices from: true"),
        ("freeze", _cat(1), "`freeze` choice 1 is unknown; use none, encoder, encoder_bn_se, all_but_bn_se."),
        ("freeze", _range("int", low=0, high=3), "`freeze` must be `type: categorical`"),
        ("freeze", {"type": "categorical", "choices": "none"}, "`freeze.choices` must be a non-empty list"),
        ("batch_duration", _cat(0, 20), "`batch_duration` choice 0 is not allowed; `batch_duration` must be a number"),
        ("batch_duration", _cat(-10), "`batch_duration` choice -10 is not allowed"),
        ("batch_duration", _cat("20"), "`batch_duration` choice '20' is text, not a number; write it without quotes"),
        ("batch_duration", _cat(True), "`batch_duration` choice True is not a number"),
        ("batch_duration", _range("int", low=0, high=20), "`batch_duration.low` is 0, but `batch_duration` must be"),
        (
            "batch_duration",
            _range("int", low=2.5, high=20),
            "`batch_duration.low` is 2.5, but an int range needs whole",
        ),
        ("lr", _range(low=-1e-3, high=1e-3), "`lr.low` is -0.001, but `lr` must be a number > 0."),
        ("lr", _cat(1.0e-4, -1.0e-4), "`lr` choice -0.0001 is not allowed; `lr` must be a number > 0."),
        ("lr", _cat("1e-4"), "(YAML reads 1e-4 without a decimal point as text: write 1.0e-4)"),
        ("lr", _range(low="abc", high=1e-3), "`lr.low` is 'abc'; it must be a number (a number > 0)."),
        ("lr", _range(low=1e-4, high=float("nan")), "`lr.high` is nan; it must be a number"),
        ("lr", _range(low=1e-2, high=1e-3), "`lr.low` (0.01) is above `lr.high` (0.001); swap them."),
        ("lr", _range(low=1e-4, high=1e-3, log="yes"), "`lr.log` is 'yes'; write true or false without quotes."),
        ("lr", _range(low=1e-4, high=1e-3, step=0), "`lr.step` is 0; it must be a number > 0."),
        (
            "weight_decay",
            _range(low=-0.1, high=0.1),
            "`weight_decay.low` is -0.1, but `weight_decay` must be a number >= 0",
        ),
        (
            "weight_decay",
            _range(low=0, high=0.1, log=True),
            "`weight_decay` has `log: true` but `low` is 0; a log range needs low > 0: raise `low` or drop `log`.",
        ),
        ("warmup_fraction", _range(low=0.0, high=1.0), "`warmup_fraction.high` is 1.0, but `warmup_fraction` must be"),
        ("warmup_fraction", _cat(0.1, -0.1), "`warmup_fraction` choice -0.1 is not allowed"),
    ],
)
def test_choices_and_bounds_are_checked_against_the_knob(tmp_path, name, entry, message):
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump({name: entry}))
    with pytest.raises(SpecError) as caught:
        load_search_space(path)
    assert str(caught.value).startswith(f"{path}: `{name}"), caught.value  # the file, then the parameter
    assert message in str(caught.value)


def test_valid_edges_and_yaml_exponents_load(tmp_path):
    path = tmp_path / "space.yaml"
    # PyYAML reads `1e-5` (no decimal point) as text: as a bound it is still the number it says.
    path.write_text(
        "lr: {type: float, low: 1e-5, high: 1e-3, log: true}\n"
        "weight_decay: {type: float, low: 0, high: 0.1}\n"
        "warmup_fraction: {type: float, low: 0, high: 0.5}\n"
        "batch_duration: {type: int, low: 10, high: 40, step: 10}\n"
        "use_loss_mask_for_prompt: {type: categorical, choices: [true, false]}\n"
    )
    space = load_search_space(path)
    assert space["lr"].low == 1e-5 and space["lr"].log
    assert space["weight_decay"].low == 0.0 and space["batch_duration"].step == 10
    assert space["use_loss_mask_for_prompt"].choices == (True, False)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"lr: {type: float, low: 1.0e-4, high: 1.0e-3}\n# caf\xe9\n", r":2: not UTF-8 text \(byte 0xe9 at column 6\)"),
        (b"lr: [unclosed\n", "is not valid YAML"),
    ],
)
def test_unreadable_space_file_is_one_message(tmp_path, content, message):
    path = tmp_path / "space.yaml"
    path.write_bytes(content)
    with pytest.raises(SpecError, match=message) as caught:
        load_search_space(path)
    assert str(caught.value).startswith(str(path))


def test_format_param_has_no_float_noise():
    assert format_param(0.1 + 0.2) == "0.3"
    assert format_param(3e-4 * 1.0000000000000002) == "0.0003"
    assert format_param(True) == "True" and format_param("encoder") == "encoder"
