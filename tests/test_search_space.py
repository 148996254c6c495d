"""Search spaces: only knobs the trial applies, valid distributions, readable values."""

import optuna.distributions as od
import pytest
import yaml

from harness.errors import HarnessError
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
        ({"lr": {"type": "float", "low": 1e-2, "high": 1e-3}}, "`lr` is invalid"),
        ({"freeze": {"type": "categorical", "choices": ["decoder"]}}, "`freeze` choice 'decoder' is unknown"),
    ],
)
def test_invalid_spaces_are_rejected_with_the_key(tmp_path, entry, message):
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump(entry))
    with pytest.raises(HarnessError, match=message):
        load_search_space(path)


def test_format_param_has_no_float_noise():
    assert format_param(0.1 + 0.2) == "0.3"
    assert format_param(3e-4 * 1.0000000000000002) == "0.0003"
    assert format_param(True) == "True" and format_param("encoder") == "encoder"
