"""kb against a server speaking SGLang's API the way SGLang documents and implements it.

No SGLang runs here (it needs a GPU), so `bench.simserver --strict` stands in for it, with SGLang's own
rules and words (see bench/simserver.py): `dimensions` refused unless the model is declared Matryoshka,
`POST /v1/tokenize` -> {tokens, count, max_model_len}, over-length input (`>=` the context length) refused
with HTTP 400 for the whole request, flat `{"object": "error", ...}` error bodies. The simulator records
the inputs it received, so what kb sends is checked directly. The same behaviours are checked against the
real vLLM in test_vllm.py.
"""

from __future__ import annotations

import asyncio
import shutil
import sys
from pathlib import Path

import httpx
import numpy as np
import pytest

from ingest.embeddings import make_embedder
from ingest.errors import EmbeddingError, InputTooLongError, KbError
from ingest.knowledge_base import KnowledgeBase
from ingest.pipeline import ingest
from ingest.settings import DEFAULT_QWEN3_TASK, load_settings
from ingest.tokens import ServerTokenCounter, qwen3_counter, resolve_counter
from kb_app.search import Searcher
from tests.conftest import DATA, best_passages
from tests.rigs.servers import free_port, start_server, wait_http

MODEL = "Qwen/Qwen3-Embedding-0.6B"  # the simulator's 0.6b profile answers with this id
DIM = 128
SHORT_CONTEXT = 256
ENDOFTEXT_ID = 151643
SGLANG_FLAG = "--json-model-override-args '{\"matryoshka_dimensions\": [...]}'"

TEXTS = {
    "en": "Solar panels turn sunlight into electricity with photovoltaic cells made of silicon.",
    "zh": "太阳能电池板利用硅制成的光伏电池把阳光转化为电能。",
    "mixed": "Chroma 存储向量 (vectors) — 2026 年, 😀 emoji & code: `x = f(y) + 1`.",
}


class Sim:
    """bench.simserver --strict in its own process, on a free loopback port."""

    def __init__(self, folder: Path, *flags: str) -> None:
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        self.v1 = f"{self.url}/v1"
        log = folder / f"simserver-{port}.log"
        command = [sys.executable, "-m", "bench.simserver", "--port", str(port), "--model-size", "0.6b",
                   "--dim", str(DIM), "--speed", "1000", "--strict", *flags]
        self.process = start_server(command, log)
        wait_http(f"{self.url}/health", self.process, log=log)

    def received(self) -> list[dict]:
        return httpx.get(f"{self.url}/received").json()

    def reset(self) -> None:
        httpx.post(f"{self.url}/reset")

    def close(self) -> None:
        self.process.terminate()
        self.process.wait(10)


@pytest.fixture(scope="module")
def servers(tmp_path_factory):
    folder = tmp_path_factory.mktemp("sglang-sim")
    started = {
        "mrl": Sim(folder, "--matryoshka", "--max-model-len", "8192"),
        "declared": Sim(folder, "--matryoshka-dimensions", "64,128", "--max-model-len", "8192"),
        "plain": Sim(folder, "--max-model-len", str(SHORT_CONTEXT)),
    }
    try:
        yield started
    finally:
        for sim in started.values():
            sim.close()


def settings_for(sim, tmp_path, **flags):
    flags.setdefault("chroma_path", tmp_path / "chroma")
    return load_settings(endpoint=[sim.v1], model=MODEL, **flags)


def embed_partial(settings, texts, kind="document"):
    async def go():
        embedder = make_embedder(settings)
        try:
            return await embedder.embed_partial(texts, kind)
        finally:
            await embedder.aclose()

    return asyncio.run(go())


def embed(settings, texts, kind="document"):
    vectors, errors = embed_partial(settings, texts, kind)
    if errors:
        raise next(iter(errors.values()))
    return np.vstack(vectors)


def server_vectors(sim, texts, **body):
    response = httpx.post(f"{sim.v1}/embeddings", json={"model": MODEL, "input": texts, **body})
    assert response.status_code == 200, response.text
    return np.array([item["embedding"] for item in response.json()["data"]])


def instructed(query: str, task: str = DEFAULT_QWEN3_TASK) -> str:
    """Qwen3-Embedding's documented query format, written out here, not taken from kb."""
    return f"Instruct: {task}\nQuery:{query}"


def text_of_tokens(counter, tokens: int) -> str:
    words = ["sun", "panel", "light", "cell", "power", "grid"]
    text, i = "", 0
    while counter.count(text + words[i % len(words)] + " ") <= tokens:
        text += words[i % len(words)] + " "
        i += 1
    text = text.rstrip()
    while counter.count(text) < tokens:
        text += "."
    assert counter.count(text) == tokens
    return text


# -- the query instruction ---------------------------------------------------------------------------


def test_query_gets_the_qwen3_instruction_and_documents_go_bare(servers, tmp_path):
    sim = servers["mrl"]
    sim.reset()
    settings = settings_for(sim, tmp_path)
    queries = ["How do solar panels turn sunlight into electricity?", "大熊猫每天吃多少竹子？"]
    document = "Giant pandas eat up to 38 kg of bamboo a day."
    kb_queries = embed(settings, queries, "query")
    kb_document = embed(settings, [document], "document")
    received = [r["input"] for r in sim.received()]
    assert received == [[instructed(q) for q in queries], [document]]
    np.testing.assert_allclose(kb_queries, server_vectors(sim, [instructed(q) for q in queries]), atol=1e-6)
    np.testing.assert_allclose(kb_document, server_vectors(sim, [document]), atol=1e-6)


def test_search_sends_the_collections_task(servers, tmp_path):
    sim = servers["mrl"]
    task = "Given a question about food, retrieve passages that answer it"
    corpus = tmp_path / "docs"
    corpus.mkdir()
    shutil.copy(DATA / "zh" / "giant-panda.txt", corpus)
    assert ingest([corpus], settings_for(sim, tmp_path, query_task=task, collection="task")).ok
    sim.reset()
    # The searcher is not told the task: it reads it from the collection.
    response = Searcher(settings_for(sim, tmp_path, collection="task")).search("What do giant pandas eat?", k=2)
    assert len(response.results) == 2
    assert [r["input"] for r in sim.received()] == [[instructed("What do giant pandas eat?", task)]]


# -- token counts --------------------------------------------------------------------------------------


@pytest.mark.parametrize("language", sorted(TEXTS))
@pytest.mark.slow
def test_server_tokenize_matches_the_local_qwen3_counter(servers, language):
    sim = servers["mrl"]
    text = TEXTS[language]
    local = qwen3_counter()
    server = resolve_counter("server", MODEL, sim.v1)
    assert isinstance(server, ServerTokenCounter)
    assert server._url == f"{sim.url}/v1/tokenize"  # SGLang's documented route, tried first
    assert server.count(text) == local.count(text)
    assert server.count_raw(text) == local.count_raw(text)
    body = httpx.post(f"{sim.v1}/tokenize", json={"model": MODEL, "prompt": text}).json()
    assert set(body) == {"tokens", "count", "max_model_len"}
    assert body["tokens"][-1] == ENDOFTEXT_ID and body["count"] == len(body["tokens"]) == local.count(text)
    assert body["max_model_len"] == 8192
    usage = httpx.post(f"{sim.v1}/embeddings", json={"model": MODEL, "input": [text]}).json()["usage"]
    assert usage["prompt_tokens"] == local.count(text)


def test_an_input_of_exactly_the_context_length_is_refused_as_too_long(servers, tmp_path):
    """SGLang refuses `tokens >= context length` (vLLM only `>`): kb reports that input as too long, alone."""
    counter = qwen3_counter()
    below, at = text_of_tokens(counter, SHORT_CONTEXT - 1), text_of_tokens(counter, SHORT_CONTEXT)
    vectors, errors = embed_partial(settings_for(servers["plain"], tmp_path), ["short", below, at])
    assert vectors[0] is not None and vectors[1] is not None and vectors[2] is None
    assert list(errors) == [2] and isinstance(errors[2], InputTooLongError)
    assert (f"The input ({SHORT_CONTEXT} tokens) is longer than the model's context length ({SHORT_CONTEXT} tokens)"
            in str(errors[2]))


# -- Matryoshka dimensions -----------------------------------------------------------------------------


def test_dimensions_on_a_matryoshka_model(servers, tmp_path):
    sim = servers["mrl"]
    texts = [TEXTS["en"], TEXTS["zh"]]
    vectors = embed(settings_for(sim, tmp_path, dimensions=32), texts)
    assert vectors.shape == (2, 32)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    full = server_vectors(sim, texts)
    np.testing.assert_allclose(vectors, full[:, :32] / np.linalg.norm(full[:, :32], axis=1, keepdims=True), atol=1e-5)
    assert [r["dimensions"] for r in sim.received()][-2:] == [32, None]


def test_dimensions_outside_the_declared_list_are_refused_with_the_servers_reason(servers, tmp_path):
    sim = servers["declared"]
    assert embed(settings_for(sim, tmp_path, dimensions=64), [TEXTS["en"]]).shape == (1, 64)
    with pytest.raises(EmbeddingError, match=r"only supports \[64, 128\] matryoshka dimensions"):
        embed(settings_for(sim, tmp_path, dimensions=32), [TEXTS["en"]])


def test_dimensions_without_matryoshka_name_the_server_flag_and_store_nothing(servers, tmp_path):
    settings = settings_for(servers["plain"], tmp_path, dimensions=32, collection="refused")
    with pytest.raises(EmbeddingError) as caught:
        embed(settings, [TEXTS["en"]])
    assert isinstance(caught.value, KbError)
    assert "does not support matryoshka representation" in str(caught.value)
    assert SGLANG_FLAG in str(caught.value)
    corpus = tmp_path / "docs"
    corpus.mkdir()
    (corpus / "a.md").write_text("# Bees\n\nHoneybees dance to tell the hive where flowers are.\n")
    (corpus / "b.txt").write_text("大熊猫主要以竹子为食。\n")
    report = ingest([corpus], settings)
    assert len(report.of("failed")) == 2 and not report.of("ingested")
    assert all(SGLANG_FLAG in o.reason for o in report.of("failed"))
    kb = KnowledgeBase.open(settings)
    assert kb.count() == 0 and kb.documents() == {} and kb.spec is None


# -- over-length input -----------------------------------------------------------------------------


def test_over_length_chunk_fails_only_its_file(servers, tmp_path):
    corpus = tmp_path / "docs"
    corpus.mkdir()
    (corpus / "bees.md").write_text("# Bees\n\nHoneybees dance to tell the hive where the flowers are.\n")
    (corpus / "panda.txt").write_text("大熊猫主要以竹子为食，每天要吃十几公斤。\n")
    shutil.copy(DATA / "en" / "solar-power.md", corpus / "long.md")  # ~700 tokens: one chunk over 256
    settings = settings_for(servers["plain"], tmp_path, chunk_tokens=1024, collection="long")
    report = ingest([corpus], settings)
    assert not report.ok
    [failed] = report.of("failed")
    assert Path(failed.source).name == "long.md"
    assert "input too long" in failed.reason and f"context length ({SHORT_CONTEXT} tokens)" in failed.reason
    assert sorted(Path(o.source).name for o in report.of("ingested")) == ["bees.md", "panda.txt"]
    kb = KnowledgeBase.open(settings)
    # bees.md: its chunk and its heading's entry; panda.txt: one chunk.
    assert sorted(Path(s).name for s in kb.documents()) == ["bees.md", "panda.txt"] and kb.count() == 3


# -- end to end -------------------------------------------------------------------------------------


def test_ingest_and_search_with_the_server_tokenizer(servers, tmp_path):
    sim = servers["mrl"]
    corpus = tmp_path / "data"
    shutil.copytree(DATA, corpus, ignore=shutil.ignore_patterns("chroma"))
    settings = settings_for(sim, tmp_path, tokenizer="server", collection="e2e")
    report = ingest([corpus], settings)
    assert report.ok and len(report.of("ingested")) == 8
    kb = KnowledgeBase.open(settings)
    assert kb.spec.tokenizer == f"server:{sim.v1}" and kb.spec.instruction == "qwen3"
    chunks, stored = kb.all_chunks(with_vectors=True)
    for chunk in chunks:
        embedded = chunk.metadata.get("heading", chunk.text)  # a heading entry embeds its heading
        count = httpx.post(f"{sim.v1}/tokenize", json={"model": MODEL, "prompt": embedded}).json()["count"]
        assert count == chunk.metadata["tokens"] <= 512
    sim.reset()
    query = "太阳能电池板是怎样把阳光变成电的？"
    searching = load_settings(endpoint=[sim.v1], chroma_path=tmp_path / "chroma", collection="e2e")
    response = Searcher(searching).search(query, k=5)
    assert [r["input"] for r in sim.received()] == [[instructed(query)]]
    scores = stored @ server_vectors(sim, [instructed(query)])[0]
    order = best_passages(chunks, scores, 5)
    assert [r.chunk_id for r in response.results] == [chunks[i].id for i in order]


# -- kb eval against a server ----------------------------------------------------------------------


def test_kb_eval_compares_dimensions_and_query_instructions_in_one_run(servers, tmp_path):
    """`--vary dimensions=32` and `--vary` of the query task: each variant's collection holds the vectors it
    asked for, and its queries went to the server in the form its collection records."""
    from kb_app.evaluate import EvalSet, compare

    sim = servers["mrl"]
    sim.reset()
    corpus = {"solar": ("Solar panels", TEXTS["en"]),
              "tea": ("Green tea", "Green tea leaves are steamed or pan-fired.")}
    evalset = EvalSet("tiny", corpus, {"q1": "太阳能电池板", "q2": "绿茶"}, {"q1": {"solar": 1}, "q2": {"tea": 1}})
    task = "Given a product name, retrieve its description"
    runs = compare(evalset, settings_for(sim, tmp_path, tokenizer="server", collection="tiny"),
                   [{"dimensions": "32"}, {"query_task": task}], tmp_path / "work")
    assert [label for label, _ in runs] == ["base (model=Qwen/Qwen3-Embedding-0.6B;tokenizer=server)",
                                            "dimensions=32", f"query_task={task}"]
    dimensions = [KnowledgeBase.open(load_settings(chroma_path=tmp_path / "chroma", collection=r.collection))
                  .spec.dimension for _, r in runs]
    assert dimensions == [DIM, 32, DIM] and len({r.collection for _, r in runs}) == 3
    queries = [r for r in sim.received() if r["input"][0].startswith("Instruct:")]
    # Each run embeds its queries twice: to score them, and again for the latency sample (search_latency).
    assert [(r["input"], r.get("dimensions")) for r in queries] == [
        ([instructed("太阳能电池板"), instructed("绿茶")], None),
        ([instructed("太阳能电池板"), instructed("绿茶")], None),
        ([instructed("太阳能电池板"), instructed("绿茶")], 32),
        ([instructed("太阳能电池板"), instructed("绿茶")], 32),
        ([instructed("太阳能电池板", task), instructed("绿茶", task)], None),
        ([instructed("太阳能电池板", task), instructed("绿茶", task)], None),
    ]
    assert all(r.queries == 2 and 0 <= r.scores["ndcg@10"] <= 1 for _, r in runs)
