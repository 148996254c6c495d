"""Canary tokenizer files inside a `.nemo`: the special vocabulary, and extraction as plain files.

A restored config's tokenizer entries point inside the archive (`model_path: nemo:...`), with a
`dir` from the machine that trained it. Preflight reads the special tokens straight from the
archive (no NeMo restore), and `tokenizers: extract` writes the files out for a self-contained
trial config (docs/ARCHITECTURE.md, "Canary facts").
"""

from __future__ import annotations

import tarfile
from pathlib import Path

from omegaconf import DictConfig, open_dict

from harness.canary import CheckpointInfo
from harness.errors import ModelError


def special_tokens(info: CheckpointInfo) -> frozenset[str]:
    """Every `<|...|>` piece of the prompt's tokenizer (spl_tokens, or the unified one), read from the archive."""
    import sentencepiece

    tokenizer = info.config.tokenizer
    entry = tokenizer.langs.spl_tokens if info.tokenizer_kind == "aggregate" else tokenizer
    model_path = str(entry.get("model_path") or "")
    if Path(model_path).is_file():  # a config pointing at files on disk
        proto = Path(model_path).read_bytes()
    else:
        with tarfile.open(info.path, "r:*") as archive:
            proto = _artifact(archive, {Path(m.name).name: m for m in archive.getmembers()}, model_path)
    processor = sentencepiece.SentencePieceProcessor(model_proto=proto)
    pieces = (processor.id_to_piece(i) for i in range(processor.get_piece_size()))
    return frozenset(piece for piece in pieces if piece.startswith("<|") and piece.endswith("|>"))


ARTIFACT_KEYS = {"model_path": "tokenizer.model", "vocab_path": "vocab.txt", "spe_tokenizer_vocab": "tokenizer.vocab"}


def extract_tokenizers(nemo_path: Path, cfg: DictConfig, out_dir: Path) -> None:
    """The second way to make a copied config self-contained: tokenizers as plain local files.

    Each tokenizer entry of a restored config points inside the archive (`model_path: nemo:...`)
    and its `dir` at the machine that trained it; fixing `dir` alone fails because `model_path`
    wins. So every entry is replaced by a fresh `{dir, type}` whose folder holds the files that
    NeMo's `save_tokenizers` would write (tokenizer.model, vocab.txt, tokenizer.vocab).
    """
    tokenizer = cfg.tokenizer
    with tarfile.open(nemo_path, "r:*") as archive:
        members = {Path(m.name).name: m for m in archive.getmembers()}
        if tokenizer.get("type") == "agg":
            fresh = {}
            for lang, entry in tokenizer.langs.items():
                fresh[lang] = {
                    "dir": str(_write_artifacts(archive, members, entry, out_dir / lang)),
                    "type": entry.get("type", "bpe"),
                }
            with open_dict(cfg):
                tokenizer.langs = fresh
        else:
            folder = _write_artifacts(archive, members, tokenizer, out_dir)
            with open_dict(cfg):
                for key in ARTIFACT_KEYS:
                    tokenizer.pop(key, None)
                tokenizer.dir = str(folder)


def _write_artifacts(archive: tarfile.TarFile, members: dict, entry: DictConfig, folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for key, filename in ARTIFACT_KEYS.items():
        value = str(entry.get(key) or "")
        if value.startswith("nemo:"):
            (folder / filename).write_bytes(_artifact(archive, members, value))
    if not (folder / "tokenizer.model").is_file():
        raise ModelError(f"No tokenizer.model for {folder.name} inside the checkpoint; it cannot be extracted.")
    return folder.resolve()


def _artifact(archive: tarfile.TarFile, members: dict, value: str) -> bytes:
    """The bytes of a `nemo:<file>` tokenizer artifact named in the config."""
    member = members.get(value.removeprefix("nemo:")) if value.startswith("nemo:") else None
    if member is None:
        raise ModelError(f"{archive.name!r} lacks the tokenizer file {value or '(none)'} named in its config.")
    handle = archive.extractfile(member)
    if handle is None:
        raise ModelError(f"{archive.name!r}: the tokenizer artifact {value} is not a file.")
    return handle.read()
