"""bench.ask on the sample corpus: the floor's probes, retrieval latency beside search, and the context budget,
each from real searches of a real store with kb's embedded model."""

import pytest

from bench.ask import (
    GENERAL,
    Probe,
    budget,
    choose_floor,
    floor_report,
    general_set,
    latency,
    probe,
    sample_questions,
    sample_set,
    wrong_side,
)
from ingest.pipeline import ingest
from ingest.settings import load_settings
from kb_app.search import Searcher
from tests.conftest import DATA


@pytest.fixture(scope="module")
def sample(tmp_path_factory):
    settings = load_settings(chroma_path=tmp_path_factory.mktemp("bench-ask") / "chroma")
    assert ingest([DATA], settings).ok
    return settings, Searcher(settings)


def test_choose_floor_keeps_the_share_asked_for():
    scores = [i / 100 for i in range(1, 101)]  # 0.01 .. 1.00
    assert choose_floor(scores, keep=0.99) == 0.02  # 0.01 may fall under, 0.02 may not
    assert choose_floor(scores, keep=0.90) == 0.11
    assert choose_floor([0.4567], keep=0.99) == 0.45  # rounded down, never above an on-topic score


def test_wrong_side_counts_each_side_against_the_floor():
    probes = [Probe("on: a", "on", "q", 0.5, True, "x"), Probe("on: a", "on", "q", 0.2, True, "x"),
              Probe("on: a", "on", "q", 0.1, False, "y"), Probe("off: b", "off", "q", 0.3, None, "z"),
              Probe("off: b", "off", "q", 0.1, None, "z")]
    assert wrong_side(probes, 0.25) == {"on_refused": 0.5, "off_answered": 0.5}  # the unjudged 0.1 is not counted


@pytest.mark.slow
def test_probes_of_the_sample_corpus_separate_on_from_off_topic(sample):
    settings, searcher = sample
    evalset = sample_set()
    on = probe(searcher, "on: sample", evalset, evalset.files)
    off = probe(searcher, "off: general -> sample", general_set(), None)
    assert len(on) == len(sample_questions()) >= 9 and len(off) == len(GENERAL) >= 40
    assert all(p.relevant for p in on)  # every sample question finds its own file first
    assert all(p.relevant is None for p in off)
    assert all(0 < p.score < 1 for p in on + off)
    report = floor_report(on + off, searcher.spec.model)
    assert report["on_relevant"]["min"] >= report["floor"]  # the 99% floor of 9 questions keeps all of them
    assert report["off"]["p50"] < report["on_relevant"]["p50"]
    assert report["wrong_side"]["off_answered"] < 0.5  # most general questions are refused
    assert report["off"]["p50"] < report["floor"]


@pytest.mark.slow
def test_latency_times_retrieve_beside_search(sample):
    settings, searcher = sample
    questions = [q for q, _ in sample_questions()][:3]
    result = latency(searcher, settings, questions, rounds=2, modes=("dense", "hybrid"))
    assert set(result) == {"dense", "hybrid"}
    for mode in result.values():
        assert mode["samples"] == 6  # 2 rounds of 3 questions, the warm-up round left out
        assert mode["search_50"] > 0 and mode["retrieve_50"] > 0 and mode["added_50"] >= 0
        assert mode["retrieve_95"] >= mode["retrieve_50"]


@pytest.mark.slow
def test_budget_fits_more_passages_in_a_larger_context(sample):
    settings, searcher = sample
    questions = [q for q, _ in sample_questions()][:2]
    result = budget(searcher, settings, questions, k=50, contexts=(2048, 4096, 16384), answer_tokens=1024)
    fits = result["fits"]
    assert 1 <= fits[2048]["mean"] < fits[4096]["mean"] < fits[16384]["mean"] <= 50
    for context, fit in fits.items():
        assert fit["prompt_tokens_mean"] <= context - 1024  # the answer's room is kept
    assert result["chunk_tokens"] == settings.chunk_tokens
    assert 0 < result["passage_text_tokens_mean"] < result["passage_tokens_mean"]  # the block adds title and place
