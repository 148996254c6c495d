"""Reading a sweep's YAML into a `SweepSpec`: the file found by name, UTF-8 read, every key and type checked
against the dataclass that owns it, renamed keys mapped (one deprecation line), then the values checked."""

from __future__ import annotations

import dataclasses
import sys
import types
import typing
from pathlib import Path
from typing import Any, Literal

import yaml

from harness.errors import SpecError
from harness.spec._schema import ONE_OR_LIST, SweepSpec
from harness.spec._values import check_values

SWEEPS_DIR = Path("sweeps")


def spec_candidates(name_or_path: str) -> list[Path]:
    """`canary-tiny` -> `sweeps/canary-tiny.yaml` (or `.yml`); an explicit YAML path is taken as is."""
    path = Path(name_or_path)
    if is_spec_path(name_or_path):
        return [path]
    return [SWEEPS_DIR / f"{name_or_path}.yaml", SWEEPS_DIR / f"{name_or_path}.yml"]


def is_spec_path(name_or_path: str) -> bool:
    """A YAML path (`path/to/x.yaml`), not a sweep's name."""
    return Path(name_or_path).suffix in (".yaml", ".yml")


def known_sweeps() -> str:
    """The names under sweeps/, for messages."""
    known = sorted(p.stem for p in SWEEPS_DIR.glob("*.yaml")) if SWEEPS_DIR.is_dir() else []
    return ", ".join(known) or "none"


def find_spec_file(name_or_path: str) -> Path:
    """The spec's file (`spec_candidates`), or an error naming where it was looked for."""
    candidates = spec_candidates(name_or_path)
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise SpecError(f"No sweep spec {candidates[0]} (run from the project root; known sweeps: {known_sweeps()}).")


def project_path(source: str) -> str:
    """A spec's path as a study records it (`names.SPEC_FILE_ATTR`): relative to the project root (the CWD every
    `harness` verb runs in) when inside it, so a job that mounts the checkout elsewhere records the same path."""
    path = Path(source).resolve()
    return str(path.relative_to(Path.cwd().resolve())) if path.is_relative_to(Path.cwd().resolve()) else str(path)


def load_spec(name_or_path: str) -> SweepSpec:
    """Read and validate a sweep spec; the sweep's name is the file's stem."""
    path = find_spec_file(name_or_path)
    raw = read_yaml(path)
    if not isinstance(raw, dict):
        raise SpecError(f"{path} must be a mapping of keys (model, data, search_space, ...).")
    raw = {"name": path.stem, **_renamed_keys(raw, path), "source": str(path)}
    spec = build(SweepSpec, raw, where=str(path), prefix="")
    check_values(spec, where=str(path))
    return spec


_RENAMED_KEYS = {"custom_tokens": "behaviours"}  # old top-level key -> its name now
_warned: set[tuple[str, str]] = set()


def _renamed_keys(raw: dict, path: Path) -> dict:
    """`raw` with old top-level keys under their new names; one warning line per file and key, once a process."""
    for old, new in _RENAMED_KEYS.items():
        if old not in raw:
            continue
        if new in raw:
            raise SpecError(f"{path}: `{old}` and `{new}` are the same key; keep `{new}` only.")
        if (str(path), old) not in _warned:
            _warned.add((str(path), old))
            print(f"warning: {path}: `{old}` is deprecated; rename it to `{new}`.", file=sys.stderr)
        raw = {(new if k == old else k): v for k, v in raw.items()}
    return raw


def read_yaml(path: Path) -> Any:
    """Parse a user's YAML file as UTF-8 (not the locale's encoding), naming the line of a bad byte."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise SpecError(f"{path} cannot be read ({exc.strerror or exc}); check the path and its permissions.") from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        column = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
        raise SpecError(
            f"{path}:{line}: not UTF-8 text (byte 0x{data[exc.start]:02x} at column {column}); "
            f"save the file as UTF-8 (for Latin-1 text: `iconv -f latin1 -t utf-8 {path} > fixed.yaml`)."
        ) from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise SpecError(f"{path} is not valid YAML: {exc}") from None


# PyYAML reads YAML 1.1, where an unquoted `on:` / `off:` key is the boolean True / False.
_YAML11_BOOLEAN_KEYS = {True: "on", False: "off"}


def build(cls: type, raw: Any, *, where: str, prefix: str) -> Any:
    """Build dataclass `cls` from `raw`, naming `where:key` on any unknown key or wrong type."""
    if not isinstance(raw, dict):
        raise SpecError(f"{where}: `{prefix.rstrip('.') or 'top level'}` must be a mapping.")
    raw = {_YAML11_BOOLEAN_KEYS.get(k, k): v for k, v in raw.items()}
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - set(fields))
    if unknown:
        key = prefix + unknown[0]
        raise SpecError(f"{where}: unknown key `{key}` (allowed here: {', '.join(sorted(fields))}).")
    hints = typing.get_type_hints(cls)
    values = {}
    for name, f in fields.items():
        if name in raw:
            value = [raw[name]] if f.metadata.get(ONE_OR_LIST) and isinstance(raw[name], str) else raw[name]
            values[name] = _coerce(hints[name], value, where=where, key=prefix + name)
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise SpecError(f"{where}: missing required key `{prefix + name}`.")
    return cls(**values)


def _coerce(hint: Any, value: Any, *, where: str, key: str) -> Any:
    """Check `value` against a type hint (dataclass, Literal, Optional, dict, list, scalars)."""
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        return build(hint, value, where=where, prefix=key + ".")
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(hint)
        if value is None and type(None) in args:
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return _coerce(inner, value, where=where, key=key)
    if origin is dict:
        if not isinstance(value, dict):
            raise SpecError(f"{where}: `{key}` must be a mapping of names to settings.")
        _, inner = typing.get_args(hint)
        return {str(name): _coerce(inner, item, where=where, key=f"{key}.{name}") for name, item in value.items()}
    if origin is list:
        if not isinstance(value, list):
            raise SpecError(f"{where}: `{key}` must be a list (one `- item` per line), not {value!r}.")
        (inner,) = typing.get_args(hint)
        return [_coerce(inner, item, where=where, key=f"{key}[{index}]") for index, item in enumerate(value)]
    if origin is Literal:
        allowed = typing.get_args(hint)
        if value not in allowed:
            raise SpecError(f"{where}: `{key}` is {value!r}; use one of {', '.join(map(str, allowed))}.")
        return value
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint in (int, float, str, bool) and (not isinstance(value, hint) or (hint is int and isinstance(value, bool))):
        raise SpecError(f"{where}: `{key}` must be {hint.__name__}, not {value!r}.")
    return value
