"""kb against a real vLLM (CPU build) serving a tiny random-weight Qwen3 embedding model.

The model's vectors mean nothing; what is tested is the plumbing kb relies on, with vLLM's own code on the
other end: the Qwen3 query instruction, token counts (`POST /tokenize` against kb's local Qwen3 counter),
Matryoshka `dimensions` with and without the server's override, over-length input, and `kb ingest` +
`kb search` end to end. Two servers (each ~40 s to start) serve every test: one declared Matryoshka with an
8,192-token context, one plain with a 256-token context.

The vLLM virtualenv is created on first use (tests/rigs/vllm.py; a few minutes) and never skipped: if it
cannot be built or a server cannot start, these tests fail with the reason.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import numpy as np
import pytest

from ingest.embeddings import make_embedder
from ingest.errors import EmbeddingError, InputTooLongError, KbError
from ingest.knowledge_base import KnowledgeBase
from ingest.manage import status
from ingest.pipeline import ingest
from ingest.settings import DEFAULT_QWEN3_TASK, load_settings
from ingest.tokens import QWEN3_ENDOFTEXT, ServerTokenCounter, qwen3_counter, resolve_counter
from kb_app.search import Searcher
from tests.conftest import DATA, best_passages
from tests.rigs import vllm as rig

# The first test pays for the venv (a few minutes when missing), the model and both servers.
pytestmark = [pytest.mark.vllm, pytest.mark.timeout(1800)]

MODEL = rig.SERVED_MODEL
SHORT_CONTEXT = 256
KB = str(Path(sys.executable).parent / "kb")
ENDOFTEXT_ID = 151643

TEXTS = {
    "en": "Solar panels turn sunlight into electricity with photovoltaic cells made of silicon.",
    "zh": "太阳能电池板利用硅制成的光伏电池把阳光转化为电能。",
    "mixed": "Chroma 存储向量 (vectors) — 2026 年, 😀 emoji & code: `x = f(y) + 1`.",
}


# -- rigs --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    rig.ensure_venv()  # creates the vLLM venv if it is missing; raises (never skips) if it cannot
    return rig.build_model(tmp_path_factory.mktemp("tiny-qwen3") / "model")


@pytest.fixture(scope="module")
def mrl_server(tiny_model, tmp_path_factory):
    """Declared Matryoshka (`--hf-overrides '{"is_matryoshka": true}'`), 8,192-token context."""
    with rig.VllmServer(tiny_model, tmp_path_factory.mktemp("vllm-mrl"), max_model_len=8192, matryoshka=True) as server:
        yield server


@pytest.fixture(scope="module")
def plain_server(tiny_model, tmp_path_factory):
    """No Matryoshka override, 256-token context."""
    with rig.VllmServer(tiny_model, tmp_path_factory.mktemp("vllm-plain"), max_model_len=SHORT_CONTEXT) as server:
        yield server


# -- helpers -----------------------------------------------------------------------------------------


def settings_for(server, tmp_path, **flags):
    flags.setdefault("chroma_path", tmp_path / "chroma")
    return load_settings(endpoint=[server.v1], model=MODEL, **flags)


def embed(settings, texts, kind="document"):
    """kb's own embedder, as the pipeline and search build it."""

    async def go():
        embedder = make_embedder(settings)
        try:
            return await embedder.embed(texts, kind)
        finally:
            await embedder.aclose()

    return asyncio.run(go())


def server_vectors(server, texts, **body):
    """What the server itself answers for these exact strings (no kb in between), unit-normalised."""
    response = httpx.post(f"{server.v1}/embeddings", json={"model": MODEL, "input": texts, **body}, timeout=120)
    assert response.status_code == 200, response.text
    vectors = np.array([item["embedding"] for item in sorted(response.json()["data"], key=lambda d: d["index"])])
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def cosine(a, b) -> float:
    return float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)))


def instructed(query: str, task: str = DEFAULT_QWEN3_TASK) -> str:
    """Qwen3-Embedding's documented query format, written out here, not taken from kb."""
    return f"Instruct: {task}\nQuery:{query}"


def kb_cli(*args, cwd, check=None):
    result = subprocess.run([KB, *args], cwd=cwd, capture_output=True, text=True, timeout=600,
                            env={**os.environ, "COLUMNS": "400"})
    if check is not None:
        assert result.returncode == check, result.stdout + result.stderr
    return result


def text_of_tokens(counter, tokens: int) -> str:
    """English text that costs exactly `tokens` tokens, special tokens included, by `counter`."""
    words = ["sun", "panel", "light", "cell", "power", "grid"]
    text = ""
    i = 0
    while counter.count(text + words[i % len(words)] + " ") <= tokens:
        text += words[i % len(words)] + " "
        i += 1
    text = text.rstrip()
    while counter.count(text) < tokens:
        text += "."
    assert counter.count(text) == tokens
    return text


# -- the query instruction ---------------------------------------------------------------------------


def test_query_gets_the_qwen3_instruction_and_documents_go_bare(mrl_server, tmp_path):
    settings = settings_for(mrl_server, tmp_path)
    queries = ["How do solar panels turn sunlight into electricity?", "大熊猫每天吃多少竹子？"]
    document = "Giant pandas eat up to 38 kg of bamboo a day."
    kb_queries = embed(settings, queries, "query")
    kb_document = embed(settings, [document], "document")[0]
    raw = server_vectors(mrl_server, [instructed(queries[0]), queries[0], instructed(queries[1]), queries[1],
                                      document, instructed(document)])
    # kb's query vector is the server's vector of the literal instruction string...
    assert cosine(kb_queries[0], raw[0]) > 0.9999
    assert cosine(kb_queries[1], raw[2]) > 0.9999
    # ...which is not the vector of the bare query (the model sees the instruction).
    assert cosine(kb_queries[0], raw[1]) < 0.99
    assert cosine(kb_queries[1], raw[3]) < 0.99
    # Documents are sent as they are.
    assert cosine(kb_document, raw[4]) > 0.9999
    assert cosine(kb_document, raw[5]) < 0.99


def test_a_custom_query_task_is_the_one_sent(mrl_server, tmp_path):
    task = "Given a question about food, retrieve passages that answer it"
    settings = settings_for(mrl_server, tmp_path, query_task=task)
    query = "What do giant pandas eat?"
    kb_query = embed(settings, [query], "query")[0]
    raw = server_vectors(mrl_server, [instructed(query, task), instructed(query)])
    assert cosine(kb_query, raw[0]) > 0.9999
    assert cosine(kb_query, raw[1]) < 0.99


# -- token counts --------------------------------------------------------------------------------------


@pytest.mark.parametrize("language", sorted(TEXTS))
def test_server_tokenize_matches_the_local_qwen3_counter(mrl_server, language):
    text = TEXTS[language]
    local = qwen3_counter()
    server = resolve_counter("server", MODEL, mrl_server.v1)
    assert isinstance(server, ServerTokenCounter)
    # vLLM's route is /tokenize at the root (its /v1/tokenize is a 404): kb found it.
    assert server._url == f"{mrl_server.url}/tokenize"
    assert server.count(text) == local.count(text)
    assert server.count_raw(text) == local.count_raw(text)
    # The convention behind both: Qwen3-Embedding's tokenizer appends <|endoftext|>, one token more
    # than the text's own tokens, and that is what the model is fed (the embeddings' usage says so).
    body = httpx.post(f"{mrl_server.url}/tokenize", json={"model": MODEL, "prompt": text}).json()
    assert body["tokens"][-1] == ENDOFTEXT_ID and body["count"] == local.count_raw(text) + 1
    assert body["max_model_len"] == 8192
    usage = httpx.post(f"{mrl_server.v1}/embeddings", json={"model": MODEL, "input": [text]}).json()["usage"]
    assert usage["prompt_tokens"] == local.count(text)
    assert QWEN3_ENDOFTEXT == "<|endoftext|>"


def test_kb_counts_the_context_limit_exactly_like_the_server(plain_server, tmp_path):
    """A text of exactly max-model-len tokens (by kb's counter) is accepted; one token more is refused,
    and kb reports it as too long for that input only."""
    counter = qwen3_counter()
    fits, over = text_of_tokens(counter, SHORT_CONTEXT), text_of_tokens(counter, SHORT_CONTEXT + 1)
    settings = settings_for(plain_server, tmp_path)

    async def go():
        embedder = make_embedder(settings)
        try:
            return await embedder.embed_partial(["a short one", fits, over], "document")
        finally:
            await embedder.aclose()

    vectors, errors = asyncio.run(go())
    assert vectors[0] is not None and vectors[1] is not None and vectors[2] is None
    assert list(errors) == [2] and isinstance(errors[2], InputTooLongError)
    assert f"maximum context length is {SHORT_CONTEXT} tokens" in str(errors[2])


# -- Matryoshka dimensions -----------------------------------------------------------------------------


def test_dimensions_with_the_matryoshka_override(mrl_server, tmp_path):
    settings = settings_for(mrl_server, tmp_path, dimensions=32)
    texts = [TEXTS["en"], TEXTS["zh"]]
    vectors = embed(settings, texts)
    assert vectors.shape == (2, 32)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    # Matryoshka: the first 32 components of the full vector, re-normalised.
    full = server_vectors(mrl_server, texts)
    truncated = full[:, :32] / np.linalg.norm(full[:, :32], axis=1, keepdims=True)
    for got, want in zip(vectors, truncated):
        assert cosine(got, want) > 0.9999


def test_matryoshka_ingest_and_search_use_the_same_dimension(mrl_server, tmp_path):
    corpus = tmp_path / "docs"
    corpus.mkdir()
    shutil.copy(DATA / "en" / "solar-power.md", corpus)
    shutil.copy(DATA / "zh" / "giant-panda.txt", corpus)
    settings = settings_for(mrl_server, tmp_path, dimensions=32, collection="mrl")
    report = ingest([corpus], settings)
    assert report.ok and len(report.of("ingested")) == 2
    kb = KnowledgeBase.open(settings)
    assert kb.spec.dimension == 32 and kb.spec.requested_dimensions == 32
    _, stored = kb.all_chunks(with_vectors=True)
    assert stored.shape[1] == 32
    # Search asks for the collection's dimension without being told.
    searcher = Searcher(settings_for(mrl_server, tmp_path, collection="mrl"))
    assert searcher.embedder.dimensions == 32
    query = "How do solar panels work?"
    response = searcher.search(query, k=3)
    want = server_vectors(mrl_server, [instructed(query)], dimensions=32)[0]
    scores = stored @ want
    assert [r.score for r in response.results] == pytest.approx(sorted(scores, reverse=True)[:3], abs=1e-3)


def test_dimensions_without_the_override_name_the_server_flag_and_store_nothing(plain_server, tmp_path):
    settings = settings_for(plain_server, tmp_path, dimensions=32, collection="refused")
    with pytest.raises(EmbeddingError) as caught:
        embed(settings, [TEXTS["en"]])
    message = str(caught.value)
    assert isinstance(caught.value, KbError)
    assert "dimensions=32" in message
    assert "--hf-overrides '{\"is_matryoshka\": true}'" in message
    # Through the pipeline: every file fails with that message, and nothing is stored.
    corpus = tmp_path / "docs"
    corpus.mkdir()
    (corpus / "a.md").write_text("# Bees\n\nHoneybees dance to tell the hive where flowers are.\n")
    (corpus / "b.txt").write_text("大熊猫主要以竹子为食。\n")
    report = ingest([corpus], settings)
    assert not report.ok and len(report.of("failed")) == 2 and not report.of("ingested")
    for outcome in report.of("failed"):
        assert "--hf-overrides '{\"is_matryoshka\": true}'" in outcome.reason
    kb = KnowledgeBase.open(settings)
    assert kb.count() == 0 and kb.documents() == {} and kb.spec is None


# -- over-length input -----------------------------------------------------------------------------


def test_over_length_chunk_fails_only_its_file(plain_server, tmp_path):
    """Chunks of up to 1,024 tokens against a 256-token server: the one file with a long chunk fails and
    says why; the short files are stored; the exit code says a file failed."""
    corpus = tmp_path / "docs"
    corpus.mkdir()
    (corpus / "bees.md").write_text("# Bees\n\nHoneybees dance to tell the hive where the flowers are.\n")
    (corpus / "panda.txt").write_text("大熊猫主要以竹子为食，每天要吃十几公斤。\n")
    shutil.copy(DATA / "en" / "solar-power.md", corpus / "long.md")  # ~700 tokens: one chunk over 256
    store = tmp_path / "chroma"
    result = kb_cli("ingest", str(corpus), "--endpoint", plain_server.v1, "--model", MODEL,
                    "--chunk-tokens", "1024", "--chroma-path", str(store), "--collection", "long", "--json",
                    cwd=tmp_path)
    assert result.returncode == 1, result.stdout + result.stderr
    report = json.loads(result.stdout)
    assert (report["ingested"], report["failed"]) == (2, 1)
    failed = [f for f in report["files"] if f["status"] == "failed"]
    assert failed[0]["source"].endswith("long.md")
    assert "input too long" in failed[0]["reason"]
    assert f"maximum context length is {SHORT_CONTEXT}" in failed[0]["reason"]
    assert "long.md" in result.stderr and "1 failed" in result.stderr
    kb = KnowledgeBase.open(load_settings(chroma_path=store, collection="long"))
    assert sorted(Path(s).name for s in kb.documents()) == ["bees.md", "panda.txt"]
    assert kb.count() == 3  # bees.md: its chunk and its heading's entry; panda.txt: one chunk


# -- end to end -------------------------------------------------------------------------------------


def test_kb_ingest_and_search_end_to_end_with_the_server_tokenizer(mrl_server, tmp_path):
    shutil.copytree(DATA, tmp_path / "data", ignore=shutil.ignore_patterns("chroma"))
    common = ["--endpoint", mrl_server.v1, "--model", MODEL, "--chroma-path", "store", "--collection", "e2e"]
    result = kb_cli("ingest", "data", *common, "--tokenizer", "server", "--json", cwd=tmp_path, check=0)
    report = json.loads(result.stdout)
    assert report["ingested"] == 8 and report["failed"] == 0 and report["chunks"] > 8

    [row] = status(load_settings(chroma_path=tmp_path / "store"))
    assert row["collection"] == "e2e" and row["model"] == MODEL
    assert row["tokenizer"] == f"server:{mrl_server.v1}"
    assert row["instruction"] == "qwen3" and row["dimension"] == 128 and row["chunk_tokens"] == 256

    # Every chunk was bounded by the server's own count of it.
    kb = KnowledgeBase.open(load_settings(chroma_path=tmp_path / "store", collection="e2e"))
    chunks, stored = kb.all_chunks(with_vectors=True)
    for chunk in chunks:
        embedded = chunk.metadata.get("heading", chunk.text)  # a heading entry embeds its heading
        count = httpx.post(f"{mrl_server.url}/tokenize", json={"model": MODEL, "prompt": embedded}).json()["count"]
        assert count == chunk.metadata["tokens"] <= 512

    # Search ranks exactly as the server's vector of the instructed query says.
    query = "太阳能电池板是怎样把阳光变成电的？"
    result = kb_cli("search", query, *common, "--json", "-k", "5", cwd=tmp_path, check=0)
    results = json.loads(result.stdout)
    want = server_vectors(mrl_server, [instructed(query)])[0]
    scores = stored @ want
    order = best_passages(chunks, scores, 5)
    assert [r["chunk_id"] for r in results] == [chunks[i].id for i in order]
    assert [r["score"] for r in results] == pytest.approx([float(scores[i]) for i in order], abs=1e-3)
