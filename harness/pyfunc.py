"""The registered model as an MLflow pyfunc (`harness.registry` logs it): a fine-tuned Canary `.nemo` that transcribes.

    model = mlflow.pyfunc.load_model("models:/NAME@champion")
    model.predict(["a.wav", "b.wav"])  # one text per file, ASR in English
    model.predict(["a.wav"], params={"source_lang": "en", "target_lang": "de", "behaviours": {"terse": True}})
    model.predict(pandas.DataFrame({"audio_filepath": [...], "source_lang": [...], "target_lang": [...]}))

It decodes exactly as `harness transcribe` does (`harness.transcription`: the input checked first, every problem
at once, then `behaviours.transcribe`, behaviour tokens in the prompt), so a version answers as the `.nemo` it
carries. The `.nemo` is its artifact `nemo`; the model is restored once, when MLflow loads the pyfunc, on the GPU
where there is one. Params: `source_lang` (default en), `target_lang` (default: the source language, i.e. ASR),
`pnc` (yes/no) and `behaviours` (each declared behaviour's switch; left out: its default). A DataFrame's
`source_lang` / `target_lang` columns, where given, set each line's languages instead of the params.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import mlflow.pyfunc
from mlflow.models import ModelSignature
from mlflow.types.schema import ColSpec, Object, ParamSchema, ParamSpec, Property, Schema

NEMO_ARTIFACT = "nemo"
AUDIO_COLUMN = "audio_filepath"
DEFAULTS: dict[str, Any] = {"source_lang": "en", "target_lang": "", "pnc": "yes"}  # target "": the source's


def signature(behaviours: Iterable[str]) -> ModelSignature:
    """Inputs as given (a list of audio paths or a DataFrame: no input schema, so MLflow passes either through),
    a list of texts out, and the params MLflow checks and fills with their defaults: the languages, `pnc` and,
    for a model that declares behaviours, one optional switch per behaviour."""
    params = [ParamSpec(name, "string", default) for name, default in DEFAULTS.items()]
    names = sorted(behaviours)
    if names:  # MLflow's object params need at least one property; a model without behaviours takes none
        switches = Object([Property(name, "boolean", required=False) for name in names])
        params.append(ParamSpec("behaviours", switches, {}))
    return ModelSignature(inputs=None, outputs=Schema([ColSpec("string")]), params=ParamSchema(params))


class CanaryTranscriber(mlflow.pyfunc.PythonModel):
    """Audio files in, one text each out, through `harness.transcription` (see the module's docstring)."""

    # MLflow would wrap `predict` to validate its input by type hints, and warn (at every import) without them;
    # hints would replace the signature's params (languages, behaviours) and refuse a DataFrame of lines. MLflow's
    # own escape hatch (its ChatModel's) leaves `predict` as written: the signature's params are still checked.
    _skip_type_hint_validation = True

    def load_context(self, context) -> None:
        from harness.canary import inspect_checkpoint
        from harness.transcription import restore_for_decoding

        nemo = Path(context.artifacts[NEMO_ARTIFACT])
        self.info = inspect_checkpoint(nemo)
        self.model = restore_for_decoding(nemo)

    def predict(self, context, model_input, params: dict[str, Any] | None = None) -> list[str]:
        from harness.transcription import check_input, decode

        options = {**DEFAULTS, "behaviours": {}, **(params or {})}
        switches = {name: bool(on) for name, on in (options["behaviours"] or {}).items() if on is not None}
        lines = audio_lines(model_input, options["source_lang"], options["target_lang"] or None)
        texts = [""] * len(lines)
        groups: dict[tuple[str, str | None], list[int]] = {}
        for index, (_, source, target) in enumerate(lines):
            groups.setdefault((source, target), []).append(index)
        for (source, target), indices in groups.items():  # one decode per language pair, order kept
            audio = [Path(lines[i][0]) for i in indices]
            check_input(self.info, audio, source_lang=source, target_lang=target, switches=switches)
            decoded = decode(
                self.model, audio, source_lang=source, target_lang=target, switches=switches, pnc=options["pnc"]
            )
            for index, text in zip(indices, decoded, strict=True):
                texts[index] = text
        return texts


def audio_lines(model_input: Any, source_lang: str, target_lang: str | None) -> list[tuple[str, str, str | None]]:
    """(audio path, source language, target language or None for ASR) per input line: from a DataFrame's
    `audio_filepath` and optional language columns, or from a path or a list of paths with the params' languages."""
    if hasattr(model_input, "columns"):  # a pandas DataFrame
        if AUDIO_COLUMN not in model_input.columns:
            from harness.errors import UsageError

            raise UsageError(
                f"The DataFrame has no `{AUDIO_COLUMN}` column (it has: {', '.join(map(str, model_input.columns))}); "
                "pass one audio path per row there, or a list of paths."
            )
        lines = []
        for row in model_input.to_dict("records"):
            source, target = row.get("source_lang"), row.get("target_lang")
            lines.append(
                (
                    str(row[AUDIO_COLUMN]),
                    source if isinstance(source, str) and source else source_lang,
                    target if isinstance(target, str) and target else target_lang,
                )
            )
        return lines
    paths = [model_input] if isinstance(model_input, (str, Path)) else list(model_input)
    return [(str(path), source_lang, target_lang) for path in paths]
