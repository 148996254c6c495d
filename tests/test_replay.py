"""Replay: old-domain training data blended into a trial's batches at its `replay_fraction` of the cuts."""

import io
import json
import math
import os
import re
import shutil
import statistics
from pathlib import Path

import pytest
import yaml
from lightning.pytorch import Callback
from mlflow.tracking import MlflowClient
from optuna.trial import TrialState
from rich.console import Console

from harness.canary import inspect_checkpoint, read_config, trial_config
from harness.errors import DataError, LaunchError, SpecError
from harness.launch._container import check_container_paths
from harness.manifest import manifest_lines
from harness.preflight import preflight
from harness.provenance import collect
from harness.replay import REPLAY_SOURCE, SOURCE_TAG, TRAIN_SOURCE, shuffle_blend
from harness.search_space import load_search_space
from harness.spec import BudgetSpec, DataSpec, TrainingSpec, load_spec
from harness.speech import (
    PRETRAIN_SPLITS,
    build_pretrain_data,
    build_replay_data,
    shuffled_pairs,
)
from harness.sweep import Supervisor
from harness.tokenizers import extract_tokenizers
from harness.training import BatchStats, build_trainer, restore_model
from harness.trial_dir import TrialDir
from harness.trial_manifests import LINE_FIELD, trial_data, write_trial_manifests
from tests.conftest import copy_manifest, spec_dict, write_spec
from tests.helpers import load_study

TERSE = {"terse": {"on": "<|spltoken0|>", "off": "<|spltoken1|>", "field": "terse"}}
REPLAY_SPACE = {
    "lr": {"type": "float", "low": 1e-3, "high": 3e-3},
    "replay_fraction": {"type": "float", "low": 0.0, "high": 0.5},
}
needs_espeak = pytest.mark.skipif(
    shutil.which("espeak-ng") is None or shutil.which("sox") is None,
    reason="espeak-ng and sox are not installed (apt-get install espeak-ng sox)",
)


@pytest.fixture(scope="session")
def replay_data(tmp_path_factory) -> Path:
    """The demo's replay set, shortened: the first lines of canary-tiny's pretraining data."""
    return build_replay_data(tmp_path_factory.mktemp("replay"), lines=24)


def _replay_spec(project: Path, manifests: dict, /, *, space: dict = REPLAY_SPACE, **overrides) -> dict:
    """`spec_dict` over `manifests` with a search space that has `replay_fraction`."""
    (project / "search_spaces" / "replay.yaml").write_text(yaml.safe_dump(space))
    return spec_dict(manifests, search_space="search_spaces/replay.yaml", **overrides)


# -- the knob and the spec ----------------------------------------------------------------------


def test_replay_fraction_is_a_share_below_1(tmp_path):
    space = tmp_path / "space.yaml"
    space.write_text(yaml.safe_dump({"replay_fraction": {"type": "float", "low": 0.0, "high": 0.5}}))
    assert load_search_space(space)["replay_fraction"].high == 0.5
    # All replay and no new domain trains nothing the sweep is for (and NeMo refuses a weight of 0).
    space.write_text(yaml.safe_dump({"replay_fraction": {"type": "categorical", "choices": [0.0, 1.0]}}))
    with pytest.raises(SpecError, match=r"`replay_fraction` choice 1.0 is not allowed.*below 1"):
        load_search_space(space)


def test_the_knob_and_the_replay_manifests_come_together(project, speech_data, replay_data):
    with pytest.raises(SpecError, match=r"has `replay_fraction`, but `data.replay` names no manifests"):
        load_spec(write_spec(project, "knob-only", _replay_spec(project, speech_data)))
    data_only = spec_dict(speech_data, data={"replay": str(replay_data)})  # the test space has no replay_fraction
    with pytest.raises(SpecError, match=r"`data.replay` is set, but the search space .* has no `replay_fraction`"):
        load_spec(write_spec(project, "data-only", data_only))
    spec = load_spec(write_spec(project, "both", _replay_spec(project, speech_data, data={"replay": str(replay_data)})))
    assert spec.data.replay == [str(replay_data)]  # one path or a list, like `data.retention`


# -- config surgery: NeMo's multi-source input_cfg ---------------------------------------------


def _surgery(base, params: dict, replay: list[str]):
    data = DataSpec(train="/d/train.json", validation="/d/val.json", replay=replay)
    budget = BudgetSpec(max_steps=100, val_check_interval=50)
    return trial_config(base, params, data=data, training=TrainingSpec(), budget=budget, seed=3)


def test_a_trial_with_replay_trains_on_two_weighted_sources(tiny_nemo):
    from tools.twins import apply_overriding_keys

    released = read_config(tiny_nemo)
    apply_overriding_keys(released, "/elsewhere/other.json")  # a released blend of other data sets: reset
    assert released.train_ds.input_cfg
    plain = _surgery(released, {"batch_duration": 20, "replay_fraction": 0.0}, ["/d/old.json"])
    assert plain.train_ds.input_cfg is None and plain.train_ds.manifest_filepath == "/d/train.json"
    assert plain.train_ds.bucket_buffer_size == 10000  # one manifest: batching as without replay

    cfg = _surgery(released, {"batch_duration": 20, "replay_fraction": 0.25}, ["/d/old.json"])
    train, replay = cfg.train_ds.input_cfg
    assert (train.type, train.manifest_filepath, train.weight, dict(train.tags)) == (
        "nemo",
        "/d/train.json",
        0.75,
        {SOURCE_TAG: TRAIN_SOURCE},
    )
    assert (replay.type, replay.manifest_filepath, replay.weight, dict(replay.tags)) == (
        "nemo",
        "/d/old.json",
        0.25,
        {SOURCE_TAG: REPLAY_SOURCE},
    )
    assert cfg.train_ds.batch_duration == 20 and cfg.train_ds.use_bucketing  # batch_duration still governs
    assert (cfg.train_ds.bucket_buffer_size, cfg.train_ds.shuffle_buffer_size) == (40, None)
    several = _surgery(released, {"replay_fraction": 0.5}, ["/d/a.json", "/d/b.json"]).train_ds.input_cfg[1]
    assert list(several.manifest_filepath) == ["/d/a.json", "/d/b.json"]  # one source, lines weighted alike


def test_a_trial_reads_each_source_of_its_blend_in_its_seeds_order(tmp_path, tiny_nemo, speech_data, replay_data):
    """Lhotse reads a blend's sources in line order through a window of ~2 x batch_duration cuts: the trial
    process points each at a copy in an order drawn from its seed (the same seed: the same bytes)."""
    audio = tmp_path / "audio"
    shutil.copytree(Path(manifest_lines(speech_data["train"])[0]["audio_filepath"]).parent, audio)

    def relative(_, entry):  # a user's manifest beside its audio folder
        return {**entry, "audio_filepath": f"audio/{Path(entry['audio_filepath']).name}"}

    train = copy_manifest(speech_data["train"], tmp_path / "train.json", relative)
    half = copy_manifest(replay_data, tmp_path / "half.json", lambda i, e: e if i % 2 else "")
    other = copy_manifest(replay_data, tmp_path / "other.json", lambda i, e: "" if i % 2 else e)
    released = read_config(tiny_nemo)

    def blend(seed: int, folder: str):
        cfg = _surgery(released, {"batch_duration": 20, "replay_fraction": 0.25}, [str(half), str(other)])
        cfg.train_ds.input_cfg[0].manifest_filepath = str(train)
        shuffle_blend(cfg.train_ds, tmp_path / folder, seed)
        return [Path(source.manifest_filepath) for source in cfg.train_ds.input_cfg]

    (train_copy, replay_copy), again, (other_order, _) = blend(3, "a"), blend(3, "b"), blend(4, "c")
    assert (train_copy, replay_copy) == (tmp_path / "a" / "train.json", tmp_path / "a" / "replay.json")
    assert [path.read_bytes() for path in again] == [train_copy.read_bytes(), replay_copy.read_bytes()]
    user = [line["audio_filepath"] for line in manifest_lines(speech_data["train"])]
    copied = [line["audio_filepath"] for line in manifest_lines(train_copy)]
    assert copied != [str(audio.resolve() / Path(path).name) for path in user]  # shuffled, audio paths absolute
    assert sorted(copied) == sorted(str(audio.resolve() / Path(path).name) for path in user)  # each line once
    assert copied != [line["audio_filepath"] for line in manifest_lines(other_order)]  # another seed, another order
    assert sorted(map(str, manifest_lines(replay_copy))) == sorted(map(str, manifest_lines(replay_data)))  # both in one
    alone = _surgery(released, {"batch_duration": 20, "replay_fraction": 0.0}, [str(half)])
    shuffle_blend(alone.train_ds, tmp_path / "none", 3)  # no blend: the sampler's own 20000-cut buffer shuffles
    assert alone.train_ds.get("input_cfg") is None and not (tmp_path / "none").exists()


# -- the copies trial processes read, and preflight ---------------------------------------------


def test_replay_copies_are_absolute_and_prompted_like_the_old_domain(project, terse_data, replay_data):
    def relative(_, entry):  # audio paths as a user's manifest may hold them: relative to the manifest
        return {**entry, "audio_filepath": os.path.relpath(entry["audio_filepath"], project)}

    user = copy_manifest(replay_data, project / "old.json", relative)
    data = {"replay": [str(user)]}
    spec = load_spec(write_spec(project, "terse", _replay_spec(project, terse_data, behaviours=TERSE, data=data)))
    trials = write_trial_manifests(spec)
    plain, prompted = trial_data(spec, baseline=True).replay[0], trials.replay[0]
    audio = [line["audio_filepath"] for line in manifest_lines(replay_data)]
    for copy in (plain, prompted):
        lines = manifest_lines(Path(copy))
        assert [line[LINE_FIELD] for line in lines] == list(range(len(audio)))
        assert [line["audio_filepath"] for line in lines] == audio  # absolute, wherever the process runs
    # Replay lines carry no `terse`: the behaviour has no default, so they are prompted `off`, as retention lines.
    assert {line["source_lang"] for line in manifest_lines(Path(prompted))} == {"<|en|><|spltoken1|>"}
    assert {line["source_lang"] for line in manifest_lines(Path(plain))} == {"en"}


def test_preflight_checks_replay_lines_like_training_lines(project, speech_data, replay_data, tiny_nemo):
    broken = copy_manifest(
        replay_data,
        project / "old.json",
        lambda i, e: {**e, "audio_filepath": "/nowhere/x.wav"} if i == 1 else {**e, "duration": 60.0} if i == 2 else e,
    )
    spec = load_spec(write_spec(project, "broken", _replay_spec(project, speech_data, data={"replay": [str(broken)]})))
    with pytest.raises(DataError) as caught:
        preflight(spec, inspect_checkpoint(tiny_nemo))
    message = str(caught.value)
    assert f"{broken}:2" in message and "/nowhere/x.wav" in message
    assert f"{broken}:3" in message and "exceeds `training.max_duration`" in message
    missing = spec_dict(speech_data, search_space="search_spaces/replay.yaml", data={"replay": ["gone.json"]})
    with pytest.raises(DataError, match=r"gone.json: manifest does not exist; set `data.replay`"):
        preflight(load_spec(write_spec(project, "missing", missing)), inspect_checkpoint(tiny_nemo))
    # Retention scores what the model kept: a line it also trains on would score as kept, whatever it forgot.
    scored = spec_dict(speech_data, search_space="search_spaces/replay.yaml", data={"replay": [str(replay_data)]})
    scored["data"]["retention"] = [str(broken)]
    with pytest.raises(DataError) as caught:
        preflight(load_spec(write_spec(project, "scored", scored)), inspect_checkpoint(tiny_nemo))
    assert f"{broken}:1: the same audio as the replay line {replay_data}:1: trials would train on" in str(caught.value)
    assert f"{broken}:2: the same audio" not in str(caught.value)  # /nowhere/x.wav is no replay line


def test_replay_manifests_are_inputs_like_the_others(project, speech_data, replay_data):
    """Provenance describes them (line count, content hash) and a container job must see them."""
    shown = [str(project), str(speech_data["train"].parent), str(speech_data["validation"].parent)]
    launch = {"executor": "slurm", "container_image": "nvcr.io/nvidia/nemo:25.04", "container_mounts": shown}
    replayed = _replay_spec(project, speech_data, data={"replay": [str(replay_data)]}, launch=launch)
    spec = load_spec(write_spec(project, "inputs", replayed))
    (described,) = [record for record in collect(spec, {}).manifests if record.role == "replay"]
    assert (described.path, described.lines) == (str(replay_data.resolve()), len(manifest_lines(replay_data)))
    with pytest.raises(LaunchError, match=rf"would not see `data.replay\[0\]` {re.escape(str(replay_data))}\W"):
        check_container_paths(spec, checkout=project, log_dir=project / "logs")


# -- the demo's replay set ------------------------------------------------------------------------


@needs_espeak
def test_the_demo_replay_set_is_a_sample_of_the_twins_pretraining_data(tmp_path):
    replay = manifest_lines(build_replay_data(tmp_path / "demo", lines=6))
    pretraining = manifest_lines(build_pretrain_data(tmp_path / "pretrain", splits={"train": 6})["train"])
    for old, new in zip(pretraining, replay, strict=True):  # the same sentences, voices, rates and tasks
        assert Path(old.pop("audio_filepath")).read_bytes() == Path(new.pop("audio_filepath")).read_bytes()
        assert old == new
    retention = shuffled_pairs("commands", seed=0)[sum(PRETRAIN_SPLITS.values()) :]
    assert not {line["text"] for line in replay} & {text for pair in retention for text in (pair.english, pair.german)}


# -- a trial's batches ----------------------------------------------------------------------------


class _Sources(Callback):
    """Each training cut's audio file, prompt language, duration and manifest line, as the step received it."""

    def __init__(self) -> None:
        self.cuts: list[tuple[str, str, float, int]] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        for cut in batch.cuts:
            mono = cut.first_non_padding_cut if type(cut).__name__ == "MixedCut" else cut
            custom = mono.custom
            self.cuts.append(
                (mono.recording.sources[0].source, custom["source_lang"], mono.duration, custom[LINE_FIELD])
            )


def test_a_trials_batches_carry_replay_at_its_fraction_of_the_cuts(project, terse_data, replay_data, tiny_nemo):
    """Over a real trial's training (behaviours, extracted tokenizers), the batches' share of replay cuts is the
    knob's, within 4 binomial standard errors over every cut trained on; and a training manifest sorted by
    duration reaches the batches shuffled, read as the trial process reads it (`shuffle_blend`)."""
    fraction, steps, copies = 0.25, 60, 4
    lines = sorted(manifest_lines(terse_data["train"]) * copies, key=lambda line: line["duration"])
    (project / "sorted.json").write_text("".join(json.dumps(line) + "\n" for line in lines))
    training = {"accelerator": "cpu", "tokenizers": "extract"}
    sorted_data = {**terse_data, "train": project / "sorted.json"}
    spec = load_spec(
        write_spec(
            project,
            "blend",
            _replay_spec(
                project, sorted_data, behaviours=TERSE, training=training, data={"replay": [str(replay_data)]}
            ),
        )
    )
    data = write_trial_manifests(spec)
    budget = BudgetSpec(max_steps=steps, val_check_interval=steps)
    params = {"lr": 2e-3, "batch_duration": 20, "replay_fraction": fraction}
    cfg = trial_config(
        read_config(tiny_nemo),
        params,
        data=data,
        training=spec.training,
        budget=budget,
        seed=0,
        behaviours=spec.behaviours,
    )
    extract_tokenizers(tiny_nemo, cfg, project / "tokenizers")
    shuffle_blend(cfg.train_ds, project / "blend", 0)
    stats, sources = BatchStats(), _Sources()
    trainer = build_trainer(spec.training, max_steps=steps, val_check_interval=steps, callbacks=[stats, sources])
    trainer.fit(restore_model(tiny_nemo, cfg, trainer=trainer))

    replay_audio = {line["audio_filepath"] for line in manifest_lines(Path(data.replay[0]))}
    train_audio = {line["audio_filepath"] for line in manifest_lines(Path(data.train))}
    seen = len(sources.cuts)
    replayed = [prompt for audio, prompt, _, _ in sources.cuts if audio in replay_audio]
    assert all(audio in replay_audio | train_audio for audio, *_ in sources.cuts)
    assert set(replayed) == {"<|en|><|spltoken1|>"}  # the prompted copy: `terse` off, the old domain's default
    share = len(replayed) / seen
    tolerance = 4 * math.sqrt(fraction * (1 - fraction) / seen)
    assert abs(share - fraction) <= tolerance, f"{share:.3f} replay cuts of {seen}, knob {fraction} +- {tolerance:.3f}"
    summary = stats.summary()
    assert summary["train_replay_share"] == pytest.approx(share)  # what a trial logs counts the same cuts
    assert summary["train_batch_seconds_max"] <= 20 * 1.2  # batch_duration governs (a closing cut may pad beyond)
    assert summary["train_batch_fill"] >= 0.8

    # Shuffled: the first quarter of the training cuts is as long as the manifest's mean, not its first quarter's
    # (here 2.33 s against 2.40 s; read in line order, as Lhotse would through the blend's 40-cut window, 2.12 s,
    # its first quarter 2.09 s), and the first pass is no longer in line order (rank correlation 0.11; on the
    # demo's 800 lines, 0.94 in line order and -0.06 to 0.02 shuffled, 4 seeds: `harness.replay`).
    trained = [(duration, line) for audio, _, duration, line in sources.cuts if audio in train_audio]
    quarter = len(lines) // 4
    assert len(trained) >= len(lines), "the test needs a first pass over the training lines"
    first = statistics.mean(duration for duration, _ in trained[:quarter])
    mean, sorted_first = (
        statistics.mean(line["duration"] for line in lines),
        statistics.mean(line["duration"] for line in lines[:quarter]),
    )
    assert abs(first - mean) < (mean - sorted_first) / 2, f"first {quarter} cuts {first:.2f} s; lines {mean:.2f} s"
    order = [line for _, line in trained[: len(lines)]]
    by_line = sorted(range(len(order)), key=order.__getitem__)  # the inverse permutation: the same correlation
    assert statistics.correlation(range(len(order)), by_line) < 0.3  # Spearman's, over a first pass


@pytest.mark.extended  # a 2-rank trial through the supervisor (about 60 s on 2 cores)
def test_a_sweep_trains_a_two_rank_trial_on_the_blend_and_logs_its_share(project, terse_data, replay_data):
    """DDP, behaviours and extracted tokenizers, as a sweep runs them: both ranks read the blend of the
    prompted copies, each source in the trial's own order, and the trial's run records the replay manifest
    among its datasets and the replay share of the cuts rank 0 trained on."""
    space = {
        "replay_fraction": {"type": "categorical", "choices": [0.5]},
        "lr": {"type": "float", "low": 1e-3, "high": 3e-3},
    }
    spec_data = _replay_spec(
        project,
        terse_data,
        space=space,
        behaviours=TERSE,
        data={"replay": [str(replay_data)]},
        budget={"trials": 1, "baseline": False},
        pruner={"type": "none"},
        training={"accelerator": "cpu", "devices": 2, "tokenizers": "extract", "validation_batch_size": 4},
    )
    spec = load_spec(write_spec(project, "ddp-blend", spec_data))
    Supervisor(spec, console=Console(file=io.StringIO(), width=200)).run()
    (trial,) = load_study(spec).get_trials()
    assert trial.state == TrialState.COMPLETE, trial.user_attrs
    log = TrialDir.of(spec, 0).log.read_text()
    assert sorted(re.findall(r"harness rank (\d) pid=\d+ ended at step (\d+)", log)) == [("0", "20"), ("1", "20")]
    client = MlflowClient(spec.tracking_uri)
    runs = client.search_runs([client.get_experiment_by_name(spec.experiment_name).experiment_id])
    (run,) = [r for r in runs if r.info.run_name == "trial-0000"]
    blend = TrialDir.of(spec, 0).blend
    assert sorted(path.name for path in blend.iterdir()) == ["replay.json", "train.json"]
    assert sorted(manifest_lines(blend / "train.json"), key=lambda line: line[LINE_FIELD]) == manifest_lines(
        Path(trial_data(spec).train)
    )
    contexts = {
        tag.value for given in run.inputs.dataset_inputs for tag in given.tags if tag.key == "mlflow.data.context"
    }
    assert contexts == {"training", "validation", "replay"}
    cuts = run.data.metrics["train_batch_cuts_mean"] * run.data.metrics["steps_trained"]
    assert abs(run.data.metrics["train_replay_share"] - 0.5) <= 4 * math.sqrt(0.25 / cuts)
