"""Hypotheses from the decode NeMo's validation already runs, scored with the harness's one definition.

NeMo's validation decodes every sample once, inside its WER and BLEU metrics (`metric.decode`), and
logs only aggregates (BLEU unsmoothed, no per-pair split, no normalisation). `ValidationTranscripts`
listens to that decode, so per-pair and normalised figures cost no second pass over the validation
set, and offers them as `figures`: the trial's consumers (pruning, MLflow, history) read these
instead of NeMo's logged `val_wer` / `val_bleu`, so every record holds one consistent set.
(Writing them into `trainer.callback_metrics` does not hold: Lightning refreshes that dict from
the logged values on every read.)

Each hypothesis is filed under its manifest line's number (`harness.trial_manifests.LINE_FIELD`), never
under its cut id: NeMo names a cut after its audio file, which lines sharing a clip (ASR and AST of one
recording) and same-named files in different folders have in common.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from pathlib import Path

import torch.distributed as dist
from lhotse.cut import MixedCut
from lightning.pytorch import Callback, LightningModule, Trainer

from harness.behaviours import ORIGINAL_SOURCE_LANG, line_states
from harness.scoring import Transcript, score, write_predictions
from harness.spec import BehaviourSpec
from harness.trial_manifests import LINE_FIELD, line_number

PREFIX = "val_"
_ATTACHED = "_harness_transcripts"
# Under DDP, Lhotse pads the last round with copies of its first cuts, ids suffixed `_dup<k>`
# (`lhotse.dataset.sampling.base.mark_as_duplicate`): the original is scored, never the copy.
_DUPLICATE = re.compile(r"_dup\d+$")


class ValidationTranscripts(Callback):
    """Collect (pair, reference, hypothesis) per validation; `figures` scores the latest one:
    `val_wer`, `val_wer_normalized`, `val_bleu`, their per-pair values (`val_wer/en-en`) and, for the
    sweep's custom `behaviours`, their values on the lines with each one on and off (`val_wer/terse_on`).

    The behaviours come from the spec, not the model config: the zero-shot baseline validates the
    pretrained model (no declaration) on the user's manifests, whose lines carry the same fields."""

    def __init__(self, behaviours: Mapping[str, BehaviourSpec] | None = None) -> None:
        self.behaviours = dict(behaviours or {})
        self._lines: dict[int, Transcript] = {}  # by line number in the validation manifest
        self._padding: dict[int, Transcript] = {}  # Lhotse's `_dup` copies, used only for a line never seen
        self._figures: dict[str, float] | None = None

    @property
    def transcripts(self) -> list[Transcript]:
        """The last validation's transcripts, one per manifest line, in manifest order."""
        lines = self._padding | self._lines
        return [lines[number] for number in sorted(lines)]

    @property
    def figures(self) -> dict[str, float]:
        """The last validation's scores, computed once per validation."""
        if self._figures is None:
            self._figures = {PREFIX + key: value for key, value in score(self.transcripts).items()}
        return self._figures

    def on_validation_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._lines, self._padding, self._figures = {}, {}, None
        for name in pl_module.metric_cfg.metrics:  # MultiTaskMetric sets each metric as a model attribute
            _listen(getattr(pl_module, name), self._record)

    def on_validation_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Under DDP each rank decodes its shard of the validation set: every rank gets all of them."""
        if trainer.world_size > 1 and dist.is_available() and dist.is_initialized():
            shards: list = [None] * dist.get_world_size()
            dist.all_gather_object(shards, (self._lines, self._padding))
            self._lines = {number: t for lines, _ in shards for number, t in lines.items()}
            self._padding = {number: t for _, padding in shards for number, t in padding.items()}
            self._figures = None

    def _record(self, cuts, hypotheses) -> None:
        for cut, hypothesis in zip(cuts, hypotheses, strict=True):
            cut = _cut(cut)
            custom = cut.custom or {}
            number = line_number(custom)
            if number is None:
                raise ValueError(
                    f"validation cut {cut.id!r} has no `{LINE_FIELD}`: validate on harness.trial_manifests' copies"
                )
            transcript = Transcript(
                source_lang=str(custom.get(ORIGINAL_SOURCE_LANG, custom.get("source_lang", "?"))),
                target_lang=str(custom.get("target_lang", "?")),
                reference=" ".join(s.text or "" for s in cut.supervisions),
                hypothesis=getattr(hypothesis, "text", str(hypothesis)),
                behaviours=line_states(custom, self.behaviours),  # NeMo keeps the manifest's extra fields here
            )
            (self._padding if _DUPLICATE.search(cut.id) else self._lines)[number] = transcript

    def write(self, path: Path) -> Path:
        """The last validation's transcripts as JSON lines (a trial artifact a user can read); with custom
        behaviours each line also says which were on (`scoring.write_predictions`, the test runs' format too)."""
        return write_predictions(path, self.transcripts, with_behaviours=bool(self.behaviours))


def _cut(cut):
    return cut.first_non_padding_cut if isinstance(cut, MixedCut) else cut


def _listen(metric, record: Callable) -> None:
    """Wrap a NeMo metric's `update` (it receives the batch's cuts) and its `decode`, to pair them.

    Both are plain instance attributes in NeMo 3.0 (WER, BLEU); wrapping is idempotent, and a metric
    that NeMo rebuilds (`change_prompt`, `change_decoding_strategy`) is wrapped again at the next validation."""
    if getattr(metric, _ATTACHED, False):
        return
    update, decode = metric.update, metric.decode
    pending: list = []

    def update_with_cuts(*args, **kwargs):
        pending[:] = list(kwargs.get("cuts") or [])
        return update(*args, **kwargs)

    def decode_and_record(*args, **kwargs):
        hypotheses = decode(*args, **kwargs)
        record(pending, hypotheses)  # strict: a hypothesis without its cut would be a silent gap
        return hypotheses

    metric.update, metric.decode = update_with_cuts, decode_and_record
    setattr(metric, _ATTACHED, True)
