"""Scoring: one WER and one BLEU definition, overall figures that are corpus figures, normalised WER."""

import math

import pytest
import sacrebleu

from harness.scoring import Transcript, corpus_wer, manifest_transcripts, normalize, score
from harness.spec import BehaviourSpec


def _rows(pair: str, texts: list[tuple[str, str]]) -> list[Transcript]:
    source, target = pair.split("-")
    return [Transcript(source, target, reference, hypothesis) for reference, hypothesis in texts]


def test_normalised_wer_forgives_case_punctuation_and_spelled_numbers_in_english():
    reference = "switch on the lamp at twenty five past ten"
    hypothesis = "Switch on the lamp, at 25 past 10!"
    assert corpus_wer([reference], [hypothesis]) > 0.4
    assert normalize(hypothesis, "en") == normalize(reference, "en")
    metrics = score(_rows("en-en", [(reference, hypothesis)]))
    assert metrics["wer_normalized"] == 0.0 and metrics["wer"] > 0.4


def test_normalised_wer_is_whispers_english_normalisation_with_its_spelling_table():
    """OpenAI's British->American table (read from installed files, no download) and its number rules; only
    OpenAI's rules: whisper_normalizer's extra "cause" -> "because" would rewrite the noun."""
    metrics = score(_rows("en-en", [("the colour of twenty five lamps", "The color of 25 lamps.")]))
    assert metrics["wer_normalized"] == 0.0 and metrics["wer"] == pytest.approx(5 / 6)  # all but "of" as written
    assert normalize("the colour", "en") == normalize("the color", "en") == "the color"
    assert normalize("the centre of the catalogue", "en") == "the center of the catalog"
    assert normalize("twenty five", "en") == normalize("25", "en") == "25"
    assert normalize("the cause", "en") == "the cause"
    assert normalize("colour", "de") == "colour"  # the table is English


def test_other_languages_get_the_basic_rules_only():
    assert normalize("Schalte das  Licht AUS, bitte!", "de") == "schalte das licht aus bitte"
    assert normalize("Il est 25 heures.", "fr") == "il est 25 heures"  # numbers are left as written


def test_overall_bleu_is_the_corpus_bleu_over_all_pairs_not_the_mean_of_pairs():
    de = _rows("en-de", [("schalte das licht im keller aus", "schalte das licht im keller aus")] * 3)
    fr = _rows("en-fr", [("allume la lampe de la cuisine", "ferme la porte du garage maintenant")] * 2)
    metrics = score(de + fr)
    assert metrics["bleu/en-de"] == pytest.approx(1.0)
    assert metrics["bleu/en-fr"] < 0.2
    expected = sacrebleu.corpus_bleu([r.hypothesis for r in de + fr], [[r.reference for r in de + fr]]).score / 100
    assert metrics["bleu"] == pytest.approx(expected)
    assert metrics["bleu"] != pytest.approx((metrics["bleu/en-de"] + metrics["bleu/en-fr"]) / 2)
    assert not any(name.startswith("wer") for name in metrics)  # no ASR samples: no WER, not a 0


def test_a_single_pair_agrees_with_the_overall_figure():
    rows = _rows("en-de", [("guten morgen herr mueller", "guten morgen herr mueller"), ("das ist gut", "das gut")])
    rows += _rows("en-en", [("open the gate", "open the gate now"), ("close it", "close it")])
    metrics = score(rows)
    for kind, pair in (("bleu", "en-de"), ("wer", "en-en"), ("wer_normalized", "en-en")):
        assert metrics[kind] == pytest.approx(metrics[f"{kind}/{pair}"])
    assert metrics["wer"] == pytest.approx(1 / 5)  # one insertion over five reference words


def test_overall_wer_weights_pairs_by_their_words():
    long = _rows("en-en", [("one two three four five six seven eight", "one two three four five six seven eight")])
    short = _rows("de-de", [("eins zwei", "drei vier")])
    metrics = score(long + short)
    assert metrics["wer"] == pytest.approx(2 / 10)
    assert metrics["wer/de-de"] == 1.0 and metrics["wer/en-en"] == 0.0


def test_empty_references_count_insertions():
    assert corpus_wer(["", ""], ["", ""]) == 0.0
    assert corpus_wer([""], ["noise"]) == 1.0
    assert math.isnan(corpus_wer([], []))


def test_each_behaviour_state_is_scored_like_a_pair():
    """Lines with a behaviour on and off get their own corpus figures; a state no line has is left out."""

    def row(pair: str, reference: str, hypothesis: str, terse: bool) -> Transcript:
        source, target = pair.split("-")
        return Transcript(source, target, reference, hypothesis, behaviours={"terse": terse, "polite": False})

    rows = [
        row("en-en", "open gate", "open the gate", True),  # 1 insertion
        row("en-en", "close door", "Close door.", True),  # 2 substitutions as written, none normalised
        row("en-en", "open the gate", "open the gate", False),
        row("en-en", "dim the lamp", "dim lamp", False),  # 1 deletion
        row("en-de", "schalte das licht im keller aus", "schalte das licht im keller aus", True),
        row("en-de", "mach die tuer zu bitte", "oeffne garage sofort jetzt", False),
    ]
    metrics = score(rows)
    groups = ["", "/en-en", "/terse_on", "/terse_off", "/polite_off"]
    assert set(metrics) == {f"{kind}{group}" for kind in ("wer", "wer_normalized") for group in groups} | {
        f"bleu{group}" for group in ["", "/en-de", "/terse_on", "/terse_off", "/polite_off"]
    }
    assert metrics["wer/terse_on"] == pytest.approx(3 / 4)
    assert metrics["wer_normalized/terse_on"] == pytest.approx(1 / 4)
    assert metrics["wer/terse_off"] == pytest.approx(1 / 6)
    assert metrics["wer_normalized/terse_off"] == pytest.approx(1 / 6)
    assert metrics["wer"] == pytest.approx(4 / 10) and metrics["wer_normalized"] == pytest.approx(2 / 10)
    assert metrics["bleu/terse_on"] == pytest.approx(1.0) and metrics["bleu/terse_off"] == 0.0
    for kind in ("wer", "wer_normalized", "bleu"):  # every line has `polite` off: its group is everything
        assert metrics[f"{kind}/polite_off"] == pytest.approx(metrics[kind])


def test_manifest_lines_carry_their_behaviour_states():
    """The test set's lines (prompted copies) say which behaviours are on; a missing field takes its default."""
    behaviours = {
        "terse": BehaviourSpec(on="<|spltoken0|>", off="<|spltoken1|>", field="terse"),
        "digits": BehaviourSpec(on="<|spltoken2|>", off="<|spltoken3|>", field="digits", default=True),
    }
    prompted = {"source_lang": "<|en|><|spltoken0|>", "harness_source_lang": "en", "target_lang": "en"}
    entries = [
        {**prompted, "text": "open gate", "terse": "yes", "digits": False},
        {**prompted, "text": "x", "terse": 0},
    ]
    transcripts = manifest_transcripts(entries, ["open the gate", "x"], "text", behaviours)
    assert [t.behaviours for t in transcripts] == [{"terse": True, "digits": False}, {"terse": False, "digits": True}]
    assert {t.pair for t in transcripts} == {"en-en"}
    assert manifest_transcripts(entries, ["a", "b"], "text")[0].behaviours == {}  # no behaviours declared
