"""Seeded sentence grammars with German translations for the synthetic speech corpora.

Two domains with little shared vocabulary: `commands` pretrains the twins, `home` is the demo
fine-tuning domain the pretrained twin has never heard. Content words come first and sentences
stay short, because a grammar whose content words come late did not ground on the audio.
German is composed slot by slot: deterministic and learnable, not always perfect German.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

LANGS = ("en", "de")


class Pair(NamedTuple):
    """One sentence in English with its German translation, and their `terse` forms where the
    grammar has them (command style without articles: the demo's custom behaviour)."""

    english: str
    german: str
    english_terse: str | None = None
    german_terse: str | None = None


class Noun(NamedTuple):
    english: str
    german: str
    gender: str  # "m", "f" or "n": picks the German article and adjective ending


# Accusative definite article and adjective ending per gender ("den hinteren", "das hintere").
_ARTICLE = {"m": ("den", "en"), "f": ("die", "e"), "n": ("das", "e")}


@dataclass(frozen=True)
class Grammar:
    """A sentence grammar: the cross product of its slots, each a list of (english, german) words."""

    name: str
    slots: tuple[tuple[object, ...], ...]
    compose: Callable[[tuple], Pair]

    def __len__(self) -> int:
        size = 1
        for slot in self.slots:
            size *= len(slot)
        return size

    def pairs(self) -> list[Pair]:
        """Every sentence of the grammar, in a fixed order."""
        return [self.compose(choice) for choice in itertools.product(*self.slots)]


def _compose_command(choice: tuple) -> Pair:
    """'open the back gate now' -> 'öffne das hintere tor jetzt'."""
    (verb_en, verb_de), (adj_en, adj_de), noun, (end_en, end_de) = choice
    article, ending = _ARTICLE[noun.gender]
    return Pair(
        f"{verb_en} the {adj_en} {noun.english} {end_en}",
        f"{verb_de} {article} {adj_de}{ending} {noun.german} {end_de}",
    )


def _compose_home(choice: tuple) -> Pair:
    """'dim the kitchen lamp a little' -> 'dimme die küchenlampe ein wenig' (terse: 'dim kitchen lamp a little').

    German separable verbs ("schalte ... ein") put their particle at the end of the sentence.
    """
    (verb_en, verb_de, particle), (room_en, room_de), noun, (mod_en, mod_de) = choice
    article, _ = _ARTICLE[noun.gender]
    german = f"{verb_de} {article} {room_de}{noun.german} {mod_de} {particle}".strip()
    german_terse = f"{verb_de} {room_de}{noun.german} {mod_de} {particle}".strip()
    english_terse = f"{verb_en} {room_en} {noun.english} {mod_en}"
    return Pair(f"{verb_en} the {room_en} {noun.english} {mod_en}", german, english_terse, german_terse)


COMMANDS = Grammar(
    name="commands",
    slots=(
        (
            ("open", "öffne"),
            ("close", "schließe"),
            ("lock", "verriegle"),
            ("unlock", "entriegle"),
            ("check", "prüfe"),
            ("clean", "reinige"),
            ("paint", "streiche"),
            ("repair", "repariere"),
            ("move", "bewege"),
            ("push", "schiebe"),
            ("pull", "ziehe"),
            ("mark", "markiere"),
        ),
        (
            ("back", "hinter"),
            ("front", "vorder"),
            ("left", "link"),
            ("right", "recht"),
            ("red", "rot"),
            ("green", "grün"),
            ("blue", "blau"),
            ("old", "alt"),
            ("new", "neu"),
            ("small", "klein"),
            ("big", "groß"),
            ("upper", "ober"),
        ),
        (
            Noun("gate", "tor", "n"),
            Noun("door", "tür", "f"),
            Noun("window", "fenster", "n"),
            Noun("box", "kiste", "f"),
            Noun("valve", "ventil", "n"),
            Noun("hatch", "luke", "f"),
            Noun("cabinet", "schrank", "m"),
            Noun("drawer", "schublade", "f"),
            Noun("truck", "lastwagen", "m"),
            Noun("bridge", "brücke", "f"),
            Noun("tunnel", "tunnel", "m"),
            Noun("barrier", "schranke", "f"),
            Noun("container", "behälter", "m"),
            Noun("wagon", "waggon", "m"),
        ),
        (
            ("now", "jetzt"),
            ("quickly", "schnell"),
            ("carefully", "vorsichtig"),
            ("today", "heute"),
            ("again", "nochmal"),
            ("twice", "zweimal"),
            ("at once", "sofort"),
            ("later", "später"),
        ),
    ),
    compose=_compose_command,
)

HOME = Grammar(
    name="home",
    slots=(
        (
            ("dim", "dimme", ""),
            ("brighten", "erhelle", ""),
            ("switch on", "schalte", "ein"),
            ("switch off", "schalte", "aus"),
            ("start", "starte", ""),
            ("pause", "pausiere", ""),
            ("mute", "stelle", "stumm"),
            ("heat", "heize", ""),
            ("cool", "kühle", ""),
            ("reset", "setze", "zurück"),
            ("stop", "stoppe", ""),
            ("test", "teste", ""),
        ),
        (
            ("kitchen", "küchen"),
            ("bedroom", "schlafzimmer"),
            ("bathroom", "bade"),
            ("hallway", "flur"),
            ("attic", "dachboden"),
            ("cellar", "keller"),
            ("living room", "wohnzimmer"),
            ("nursery", "kinderzimmer"),
            ("office", "büro"),
            ("garden", "garten"),
        ),
        (
            Noun("lamp", "lampe", "f"),
            Noun("heater", "heizung", "f"),
            Noun("fan", "ventilator", "m"),
            Noun("radio", "radio", "n"),
            Noun("speaker", "lautsprecher", "m"),
            Noun("oven", "ofen", "m"),
            Noun("kettle", "wasserkocher", "m"),
            Noun("blinds", "jalousie", "f"),
            Noun("fridge", "kühlschrank", "m"),
            Noun("dishwasher", "spülmaschine", "f"),
            Noun("toaster", "toaster", "m"),
            Noun("clock", "uhr", "f"),
        ),
        (
            ("a little", "ein wenig"),
            ("a lot", "stark"),
            ("tonight", "heute abend"),
            ("for an hour", "für eine stunde"),
            ("in ten minutes", "in zehn minuten"),
            ("before dinner", "vor dem abendessen"),
            ("after breakfast", "nach dem frühstück"),
            ("until morning", "bis zum morgen"),
        ),
    ),
    compose=_compose_home,
)

GRAMMARS: dict[str, Grammar] = {grammar.name: grammar for grammar in (COMMANDS, HOME)}


def grammar(domain: str) -> Grammar:
    """Look a domain up by name, with an error that lists the known ones."""
    if domain not in GRAMMARS:
        raise KeyError(f"Unknown corpus domain '{domain}'; use one of {sorted(GRAMMARS)}.")
    return GRAMMARS[domain]


def shuffled_pairs(domain: str, seed: int) -> list[Pair]:
    """All sentences of a domain in a seeded order (the same seed gives the same order everywhere)."""
    pairs = grammar(domain).pairs()
    random.Random(f"{domain}:{seed}").shuffle(pairs)
    return pairs


def split_pairs(domain: str, sizes: dict[str, int], seed: int, *, offset: int = 0) -> dict[str, list[Pair]]:
    """Cut consecutive, hence disjoint, slices of the shuffled domain for each split, from `offset` on
    (another corpus's splits of the same order, e.g. the twins' pretraining, come before it)."""
    pairs = shuffled_pairs(domain, seed)
    needed = offset + sum(sizes.values())
    if needed > len(pairs):
        raise ValueError(
            f"Splits {sizes} from sentence {offset} on need {needed} sentences but domain '{domain}' has only "
            f"{len(pairs)}."
        )
    splits, start = {}, offset
    for name, size in sizes.items():
        splits[name] = pairs[start : start + size]
        start += size
    return splits


def all_text(lang: str) -> list[str]:
    """Every sentence of every domain in one language: the training text of the sub-tokenizers.

    Both domains go in, so the tokenizer can spell the demo domain like a real multilingual
    tokenizer could, while the model itself has only heard `commands`.
    """
    if lang not in LANGS:
        raise KeyError(f"Unknown language '{lang}'; use one of {list(LANGS)}.")
    pairs = [pair for name in sorted(GRAMMARS) for pair in GRAMMARS[name].pairs()]
    return [pair.english if lang == "en" else pair.german for pair in pairs]
