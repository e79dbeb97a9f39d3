"""Reranking: kb's client against the rerank APIs (a real vLLM serving a tiny Qwen3-Reranker, and a
fault-injecting server speaking vLLM's and SGLang's answers), and search in every mode with per-stage scores."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ingest.errors import ConfigError, KbError, RerankError
from ingest.pipeline import ingest
from ingest.settings import load_settings
from kb_app.rerank import QWEN3_PREFIX, QWEN3_SUFFIX, Reranker
from kb_app.search import Searcher
from tests.conftest import DATA
from tests.fakereranker import FakeReranker, overlap_score
from tests.rigs import vllm as rig
from tests.rigs.vllm_reranker import VllmReranker, build_reranker

KB = str(Path(sys.executable).parent / "kb")
DOCS = ["Paris is the capital of France.", "Bananas are yellow.", "The Eiffel Tower is in Paris, France."]
QUERY = "What is the capital of France?"


def rerank(reranker: Reranker, query: str, documents: list[str]) -> list[float]:
    async def go() -> list[float]:
        try:
            return await reranker.rerank(query, documents)
        finally:
            await reranker.aclose()

    return asyncio.run(go())


@pytest.fixture
def fake():
    with FakeReranker() as server:
        yield server


@pytest.mark.parametrize("shape", ["vllm", "sglang"])
def test_scores_come_back_in_the_order_sent_whatever_order_the_server_answers(shape):
    with FakeReranker(shape=shape) as server:
        scores = rerank(Reranker(server.url, server.model), QUERY, DOCS)
        assert scores == [overlap_score(QUERY, d) for d in DOCS]
        assert server.paths == ["/v1/rerank"] and server.bodies[0] == {
            "model": server.model, "query": QUERY, "documents": DOCS, "top_n": 3}


def test_the_score_api_and_an_endpoint_given_with_its_version(fake):
    scores = rerank(Reranker(fake.url + "/v1/", fake.model, api="score"), QUERY, DOCS)
    assert scores == [overlap_score(QUERY, d) for d in DOCS]
    assert fake.paths == ["/v1/score"] and fake.bodies[0] == {"model": fake.model, "text_1": QUERY, "text_2": DOCS}


def test_transient_faults_are_retried_and_a_refusal_is_reported(fake):
    fake.faults.extend(["429:0", "503", "drop", "json"])
    reranker = Reranker(fake.url, fake.model, backoff_base=0.01, backoff_cap=0.05)
    assert rerank(reranker, QUERY, DOCS) == [overlap_score(QUERY, d) for d in DOCS]
    assert reranker.retries == 4 and len(fake.bodies) == 5
    fake.faults.extend(["503"] * 3)
    with pytest.raises(RerankError, match=r"/v1/rerank: gave up after 3 attempts: HTTP 503: server busy"):
        rerank(Reranker(fake.url, fake.model, max_retries=2, backoff_base=0.01), QUERY, DOCS)
    with pytest.raises(RerankError, match="HTTP 404: The model `nope` does not exist"):
        rerank(Reranker(fake.url, "nope"), QUERY, DOCS)
    assert len(fake.bodies) == 5 + 3 + 1  # a refusal is not retried


def test_the_qwen3_template_wraps_query_and_passages_for_a_server_without_it(fake):
    rerank(Reranker(fake.url, fake.model, template="qwen3"), "q?", ["d1", "d2"])
    body = fake.bodies[0]
    assert body["query"].startswith(QWEN3_PREFIX) and body["query"].endswith("<Query>: q?\n")
    assert body["documents"] == [f"<Document>: d{i}{QWEN3_SUFFIX}" for i in (1, 2)]


def test_settings_refuse_reranking_without_an_endpoint():
    with pytest.raises(ConfigError, match="rerank endpoint"):
        load_settings(rerank=True)
    with pytest.raises(ConfigError, match="rerank_endpoint"):
        load_settings(rerank_endpoint="localhost:8000")


# -- search in each mode ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sample_kb(tmp_path_factory):
    settings = load_settings(chroma_path=tmp_path_factory.mktemp("rerank") / "chroma")
    assert ingest([DATA], settings).ok
    return settings


def test_each_mode_reports_the_scores_of_its_stages(sample_kb, fake):
    settings = sample_kb.model_copy(update={"rerank_endpoint": fake.url, "rerank_model": fake.model,
                                            "rerank_candidates": 8})
    finder = Searcher(settings)
    query = "pour-over coffee water temperature"
    dense = finder.search(query, k=5, mode="dense", rerank=False)
    hybrid = finder.search(query, k=5, mode="hybrid", rerank=False)
    both = finder.search(query, k=5, mode="hybrid", rerank=True)
    assert (dense.mode, hybrid.mode, both.mode) == ("dense", "hybrid", "hybrid+rerank")
    assert set(dense.timings) == {"embed", "dense"}
    assert set(hybrid.timings) == {"embed", "dense", "lexical", "fuse"}
    assert set(both.timings) == {"embed", "dense", "lexical", "fuse", "rerank"}

    assert all(r.lexical_rank is None and r.fused_score is None and r.score == r.dense_score for r in dense.results)
    assert [r.dense_rank for r in dense.results] == [1, 2, 3, 4, 5]
    # Hybrid: each passage's fused score is its reciprocal ranks' sum, and results follow it.
    for r in hybrid.results:
        expected = sum(1 / (60 + rank) for rank in (r.dense_rank, r.lexical_rank) if rank)
        assert r.score == r.fused_score == pytest.approx(expected, abs=1e-6)
    assert [r.score for r in hybrid.results] == sorted((r.score for r in hybrid.results), reverse=True)
    assert any(r.lexical_rank for r in hybrid.results)
    # Rerank: the best 8 fused passages were sent, and come back ordered by the reranker's score.
    sent = fake.bodies[-1]
    assert sent["query"] == query and len(sent["documents"]) == 8
    assert [r.rerank_score for r in both.results] == sorted(
        (round(overlap_score(query, d), 4) for d in sent["documents"]), reverse=True)[:5]
    assert all(r.score == r.rerank_score and r.fused_score for r in both.results)
    assert both.results[0].source.endswith("coffee-brewing.html")

    dense_rerank = finder.search(query, k=3, mode="dense", rerank=True)
    assert dense_rerank.mode == "dense+rerank" and all(r.lexical_rank is None for r in dense_rerank.results)


def test_hybrid_finds_a_rare_exact_term_dense_vectors_miss(sample_kb, tmp_path):
    """A part number only BM25 can match: hybrid puts its passage first."""
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for name in ("coffee-brewing.html", "solar-power.md"):
        (corpus / name).write_bytes((DATA / "en" / name).read_bytes())
    (corpus / "parts.md").write_text(
        "# Spare parts\n\nThe replacement valve for the boiler is part QX-7731-B; order it from the supplier.\n\n"
        "The gasket kit is part LM-2208-C and fits every model made after 2019.\n")
    settings = load_settings(chroma_path=tmp_path / "chroma")
    assert ingest([corpus], settings).ok
    finder = Searcher(settings)
    hybrid = finder.search("QX-7731-B", k=3, mode="hybrid")
    top = hybrid.results[0]
    assert top.source.endswith("parts.md") and "QX-7731-B" in top.text and top.lexical_rank == 1
    # The where filter applies to what BM25 alone found, too.
    filtered = finder.search("QX-7731-B", k=3, mode="hybrid", where={"file_type": "html"}).results
    assert filtered and all(r.file_type == "html" for r in filtered)


@pytest.mark.slow
def test_cli_search_shows_each_stage(sample_kb, fake):
    result = subprocess.run(
        [KB, "search", "pour-over coffee water temperature", "-k", "3", "--mode", "hybrid", "--rerank",
         "--rerank-endpoint", fake.url, "--rerank-model", fake.model, "--chroma-path", str(sample_kb.chroma_path)],
        capture_output=True, text=True, timeout=120, env={**os.environ, "COLUMNS": "300"})
    assert result.returncode == 0, result.stderr
    assert "dense #" in result.stdout and "rrf " in result.stdout and "rerank " in result.stdout
    assert "(hybrid+rerank: " in result.stderr and "rerank " in result.stderr
    as_json = subprocess.run(
        [KB, "search", "coffee", "-k", "2", "--mode", "hybrid", "--json", "--chroma-path", str(sample_kb.chroma_path)],
        capture_output=True, text=True, timeout=120)
    rows = json.loads(as_json.stdout)
    assert len(rows) == 2 and all(r["fused_score"] and "lexical_rank" in r and r["rerank_score"] is None for r in rows)
    refused = subprocess.run([KB, "search", "coffee", "--rerank", "--chroma-path", str(sample_kb.chroma_path)],
                             capture_output=True, text=True, timeout=120)
    assert refused.returncode == 2 and "rerank endpoint" in refused.stderr
    bad_mode = subprocess.run([KB, "search", "coffee", "--mode", "sparse", "--chroma-path", str(sample_kb.chroma_path)],
                              capture_output=True, text=True, timeout=120)
    assert bad_mode.returncode == 2 and "search_mode" in bad_mode.stderr


# -- a real vLLM reranker -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def vllm_reranker(tmp_path_factory):
    rig.ensure_venv()  # never skipped: if vLLM cannot be installed or started, the tests fail with the reason
    work = tmp_path_factory.mktemp("vllm-reranker")
    with VllmReranker(build_reranker(work / "model"), work / "run", max_model_len=1024) as server:
        yield server


@pytest.mark.timeout(1800)
@pytest.mark.vllm
def test_vllm_rerank_and_score_apis_agree(vllm_reranker):
    server = vllm_reranker
    by_rerank = rerank(Reranker(server.url, server.model), QUERY, DOCS)
    by_score = rerank(Reranker(server.url + "/v1", server.model, api="score"), QUERY, DOCS)
    # The same model scores the same pairs, whether vLLM sorts them (/rerank) or not (/score).
    assert by_rerank == pytest.approx(by_score, abs=1e-5)
    assert len(set(by_rerank)) == 3 and all(0.0 <= s <= 1.0 for s in by_rerank)
    reversed_scores = rerank(Reranker(server.url, server.model), QUERY, DOCS[::-1])
    assert reversed_scores == pytest.approx(by_rerank[::-1], abs=1e-5)
    with pytest.raises(RerankError, match="does not exist"):
        rerank(Reranker(server.url, "no-such-model"), QUERY, DOCS)
    with pytest.raises(RerankError, match="maximum context length"):
        rerank(Reranker(server.url, server.model), QUERY, ["word " * 2000])


@pytest.mark.timeout(1800)
@pytest.mark.vllm
def test_search_reranked_by_vllm(sample_kb, vllm_reranker):
    server = vllm_reranker
    settings = sample_kb.model_copy(update={"rerank_endpoint": server.url, "rerank_model": server.model,
                                            "rerank": True, "search_mode": "hybrid", "rerank_candidates": 6})
    response = Searcher(settings).search("How do solar panels work?", k=6)
    assert response.mode == "hybrid+rerank" and len(response.results) == 6
    scores = [r.rerank_score for r in response.results]
    assert scores == sorted(scores, reverse=True)
    # Each passage carries the score vLLM gives it when asked directly.
    direct = rerank(Reranker(server.url, server.model, api="score"), "How do solar panels work?",
                    [r.text for r in response.results])
    assert scores == pytest.approx(direct, abs=1e-3)
    with pytest.raises(KbError, match="does not exist"):
        Searcher(settings.model_copy(update={"rerank_model": "nope"})).search("solar", k=2)


def test_the_majority_gate_keeps_bm25_to_questions_in_the_collections_main_language(sample_kb):
    """A Chinese question that carries Latin letters ("DC", "AC") matches English passages by those alone."""
    query = "逆变器 DC AC"
    plain = Searcher(sample_kb.model_copy(update={"search_mode": "hybrid", "hybrid_gate": "none"})).search(
        query, k=10).results
    assert any(r.lexical_rank and r.language == "en" for r in plain)
    gated = Searcher(sample_kb.model_copy(update={"search_mode": "hybrid", "hybrid_gate": "majority"}))
    assert gated._main_language() == "en"  # 6 of the 8 sample documents are English
    results = gated.search(query, k=10).results
    assert not any(r.lexical_rank for r in results)  # a Chinese question: the vectors alone
    assert results[0].source.endswith("solar-power.md")
    english = gated.search("inverter DC AC", k=10).results
    assert any(r.lexical_rank for r in english) and all(r.language == "en" for r in english if r.lexical_rank)
