"""Custom behaviours: unused placeholder tokens (`<|spltokenN|>`) switched on or off per manifest line.

Canary's prompt has no slot for new instructions, but both prompt formats (canary, canary2) pass a
`source_lang` value that is already a special token through unchanged and tokenize all of it with
the special tokenizer. So `source_lang: "<|en|><|spltoken0|>"` puts a placeholder token into the
decoder prompt of a stock NeMo model, in training and in `transcribe()`, with the released
tokenizer. `harness.trial_manifests` writes such copies of the sweep's manifests (per sweep, in its state dir),
keeping the original language in `harness_source_lang` for metrics and per-pair names, and stores
the declaration in every trial's model config so a fine-tuned checkpoint knows its behaviours.

Tokens follow the behaviours' names in sorted order, so training and inference always agree.
Retention lines (`data.retention`, the model's old domain) rarely carry a behaviour's field: they
take its `default`, and `off` when it has none, since off is the closest to what the model did
before it learnt the behaviour, and what a caller of the fine-tuned model would ask for there.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from harness.errors import UsageError
from harness.manifest import Problem, resolve_audio
from harness.spec import BehaviourSpec, SweepSpec

ORIGINAL_SOURCE_LANG = "harness_source_lang"
CONFIG_KEY = "harness_custom_tokens"  # the declaration, inside a trial's (and checkpoint's) model config
PLACEHOLDER = re.compile(r"<\|spltoken\d+\|>")
ON_VALUES = (True, 1, "true", "yes", "on", "1")
OFF_VALUES = (False, 0, "false", "no", "off", "0")
# NeMo 3.0's CanaryTokenizer tokenizes a non-empty canary2 `decodercontext` with the language it
# finds at `prompt.split("<|")[4]`: with a behaviour token after `source_lang` that is the token.
CONTEXT_BREAKS = ("canary2", "aggregate")


def is_on(value: Any) -> bool | None:
    """A manifest value read as a switch: True, False, or None when it is not one."""
    if isinstance(value, str):
        value = value.strip().lower()
    if value in ON_VALUES:
        return True
    return False if value in OFF_VALUES else None


def prompt_tokens(behaviours: Mapping[str, BehaviourSpec], states: Mapping[str, bool]) -> str:
    """The placeholder tokens for one utterance, in the behaviours' sorted order."""
    return "".join(behaviours[name].on if states[name] else behaviours[name].off for name in sorted(behaviours))


def prompted_source_lang(lang: str, tokens: str) -> str:
    """`en` + tokens -> `<|en|><|spltoken0|>`: a value NeMo's prompt formatters pass through as is."""
    return (lang if lang.startswith("<|") else f"<|{lang}|>") + tokens


def line_default(behaviour: BehaviourSpec, *, retention: bool = False) -> bool | None:
    """The state of a line without the behaviour's field: its default; off on a retention line without one."""
    return False if behaviour.default is None and retention else behaviour.default


def line_states(entry: Mapping, behaviours: Mapping[str, BehaviourSpec], *, retention: bool = False) -> dict[str, bool]:
    """Each behaviour's state on one (preflighted) manifest line."""
    states = {}
    for name, behaviour in behaviours.items():
        default = line_default(behaviour, retention=retention)
        state = is_on(entry[behaviour.field]) if behaviour.field in entry else default
        if state is None:
            raise ValueError(f"`{behaviour.field}` is missing or not a switch in {dict(entry)}")
        states[name] = state
    return states


# -- checks (run by preflight) -----------------------------------------------------------------


def check_declaration(spec: SweepSpec, special_tokens: frozenset[str]) -> list[Problem]:
    """Tokens must be unused placeholders the model's special vocabulary has, each used once."""
    problems = []
    seen: dict[str, str] = {}
    for name, behaviour in spec.behaviours.items():
        for side in ("on", "off"):
            token, key = getattr(behaviour, side), f"behaviours.{name}.{side}"
            if not PLACEHOLDER.fullmatch(token):
                problems.append(
                    Problem(
                        spec.source,
                        f"`{key}` is {token!r}; use a placeholder like <|spltoken0|>: "
                        "a token with a meaning (a language, <|pnc|>) would change the prompt",
                    )
                )
            elif token not in special_tokens:
                count = sum(1 for t in special_tokens if PLACEHOLDER.fullmatch(t))
                problems.append(
                    Problem(
                        spec.source,
                        f"`{key}` is {token}, which the model's tokenizer does not have "
                        f"(it has {count} placeholders, <|spltoken0|> to <|spltoken{max(count - 1, 0)}|>)",
                    )
                )
            if token in seen:
                problems.append(Problem(spec.source, f"`{key}` reuses {token}, already `{seen[token]}`"))
            seen.setdefault(token, key)
    return problems


def check_entry(
    where: str, data: Mapping, spec: SweepSpec, *, prompt_format: str, tokenizer_kind: str, retention: bool = False
) -> list[Problem]:
    """Every line must say whether each behaviour is on (unless it has a default or is a retention line),
    and must not combine the behaviour tokens with a decoder context the tokenizer cannot handle."""
    problems = []
    if spec.behaviours and data.get("decodercontext") and (prompt_format, tokenizer_kind) == CONTEXT_BREAKS:
        problems.append(
            Problem(
                where,
                "`decodercontext` is set, which NeMo's canary2 aggregate tokenizer cannot combine with custom "
                "behaviours (it reads the prompt's 5th token as the target language and finds the behaviour "
                'token after `source_lang`): remove `decodercontext` from the line (or set it to "") '
                f"or remove `behaviours` from {spec.source or 'the sweep spec'}",
            )
        )
    for name, behaviour in spec.behaviours.items():
        if behaviour.field not in data:
            if line_default(behaviour, retention=retention) is None:
                problems.append(
                    Problem(
                        where,
                        f"missing `{behaviour.field}` (custom behaviour `{name}`); add it to every line "
                        f"or set `behaviours.{name}.default`",
                    )
                )
        elif is_on(data[behaviour.field]) is None:
            problems.append(
                Problem(
                    where,
                    f"`{behaviour.field}` is {data[behaviour.field]!r}; use true or false (custom behaviour `{name}`)",
                )
            )
    return problems


# -- the lines of the manifests trials read (harness.trial_manifests writes them) -----------------


def prompted_entry(
    entry: dict, manifest: Path, behaviours: Mapping[str, BehaviourSpec], *, retention: bool = False
) -> dict:
    """One line with the behaviour tokens after its source language and an absolute audio path."""
    tokens = prompt_tokens(behaviours, line_states(entry, behaviours, retention=retention))
    return {
        **entry,
        "audio_filepath": str(resolve_audio(manifest, entry["audio_filepath"]).resolve()),
        ORIGINAL_SOURCE_LANG: entry["source_lang"],
        "source_lang": prompted_source_lang(entry["source_lang"], tokens),
    }


def original_source_lang(entry: Mapping) -> str | None:
    return entry.get(ORIGINAL_SOURCE_LANG, entry.get("source_lang"))


def declaration(behaviours: Mapping[str, BehaviourSpec]) -> dict[str, dict]:
    """The behaviours as plain data, for a model config."""
    return {name: dataclasses.asdict(behaviour) for name, behaviour in behaviours.items()}


# -- using a fine-tuned checkpoint ----------------------------------------------------------------


def declared_behaviours(model_cfg: Mapping) -> dict[str, BehaviourSpec]:
    """The behaviours a checkpoint was fine-tuned with (from its model config)."""
    declared = model_cfg.get(CONFIG_KEY) or {}
    return {name: BehaviourSpec(**dict(behaviour)) for name, behaviour in declared.items()}


def transcribe(
    model, audio: list[str], *, source_lang: str, target_lang: str, behaviours: Mapping[str, bool], **kwargs
):
    """`model.transcribe()` with behaviour tokens in the prompt, e.g. `behaviours={"terse": True}`.

    Behaviours left out take their declared default; a behaviour without one must be given. The
    canary (v1) prompt also names the task, which NeMo would default to `asr` even for a translation.
    """
    declared = declared_behaviours(model.cfg)
    unknown = sorted(set(behaviours) - set(declared))
    if unknown:
        raise UsageError(
            f"The model declares no behaviour {unknown[0]!r} (it has: {', '.join(sorted(declared)) or 'none'})."
        )
    states = {}
    for name, behaviour in declared.items():
        state = behaviours.get(name, behaviour.default)
        if state is None:
            raise UsageError(f"Behaviour {name!r} has no default; pass behaviours={{{name!r}: True or False}}.")
        states[name] = bool(state)
    source = prompted_source_lang(source_lang, prompt_tokens(declared, states))
    if model.cfg.get("prompt_format") == "canary":
        # NeMo copies only `taskname` into each utterance (a `task` kwarg is silently dropped).
        explicit = kwargs.pop("task", None) or kwargs.get("taskname")
        kwargs["taskname"] = explicit or canary_v1_task(source_lang, target_lang)
    return model.transcribe(audio, source_lang=source, target_lang=target_lang, **kwargs)


def canary_v1_task(source_lang: str, target_lang: str) -> str:
    """The canary (v1) prompt's task: `ast` (its <|translate|> token) when the languages differ, else `asr`."""
    source, target = (lang.removeprefix("<|").removesuffix("|>") for lang in (source_lang, target_lang))
    return "asr" if source == target else "ast"
