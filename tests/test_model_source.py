"""Model source: packaged twin, local files, registry names offline, unknown names."""

import pytest

from harness.errors import ModelError
from harness.model_source import resolve_model


def test_packaged_twin_and_local_path(tiny_nemo):
    assert resolve_model("canary-tiny") == tiny_nemo
    assert resolve_model(str(tiny_nemo)) == tiny_nemo.resolve()


def test_unknown_name_says_what_to_pass():
    with pytest.raises(ModelError, match=r"'canary-2b' is neither a known name .*canary-180m.* or to a .nemo path"):
        resolve_model("canary-2b")


def test_missing_nemo_file(tmp_path):
    with pytest.raises(ModelError, match="nor an existing .nemo file"):
        resolve_model(str(tmp_path / "model.nemo"))


def test_registry_name_offline_explains_local_nemo(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    with pytest.raises(ModelError, match=r"nvidia/canary-180m-flash.*model: /path/to/canary-180m-flash.nemo"):
        resolve_model("canary-180m")
