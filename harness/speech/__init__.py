"""Synthetic speech: espeak-ng synthesis, sentence grammars and NeMo manifests for the twins."""

from harness.speech.corpora import COMMANDS, GRAMMARS, HOME, LANGS, Grammar, Pair, all_text, shuffled_pairs, split_pairs
from harness.speech.datasets import (
    DEMO_RATES,
    DEMO_SPLITS,
    DEMO_VOICES,
    PRETRAIN_RATES,
    PRETRAIN_SPLITS,
    PRETRAIN_VOICES,
    REPLAY_LINES,
    RETENTION_LINES,
    build_corpus,
    build_demo_data,
    build_pretrain_data,
    build_replay_data,
    build_retention_data,
)
from harness.speech.synth import synthesize

__all__ = [
    "COMMANDS",
    "DEMO_RATES",
    "DEMO_SPLITS",
    "DEMO_VOICES",
    "GRAMMARS",
    "HOME",
    "LANGS",
    "PRETRAIN_RATES",
    "PRETRAIN_SPLITS",
    "PRETRAIN_VOICES",
    "REPLAY_LINES",
    "RETENTION_LINES",
    "Grammar",
    "Pair",
    "all_text",
    "build_corpus",
    "build_demo_data",
    "build_pretrain_data",
    "build_replay_data",
    "build_retention_data",
    "shuffled_pairs",
    "split_pairs",
    "synthesize",
]
