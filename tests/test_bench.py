"""The simulated SGLang-like server, `python -m bench.run` and `kb bench --endpoint` (no timed assertions: counts and
accounting only)."""

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import httpx
import numpy as np
import openai
import pytest

from bench.run import run_simulated
from bench.servers import SimulatedServer
from bench.simserver import PROFILES, Simulator
from ingest.tokens import qwen3_counter
from tests.conftest import DATA, ROOT

KB = str(Path(sys.executable).parent / "kb")


def test_capacity_matches_the_calibration():
    # 4B's saturation rate on one H200, which the profiles were calibrated to (docs/benchmarks.md); faster for
    # 0.6B, slower for 8B.
    capacities = {size: Simulator(size).capacity for size in PROFILES}
    assert 45_000 < capacities["4b"] < 55_000
    assert capacities["0.6b"] > capacities["4b"] > capacities["8b"]


def test_continuous_batching_accounts_every_token():
    async def scenario():
        simulator = Simulator("4b", step_tokens=64, dim=8, speed=1000)
        scheduler = asyncio.create_task(simulator.scheduler())
        await asyncio.sleep(0)
        texts = [f"passage number {i} " * (i + 1) for i in range(20)]
        results = await asyncio.gather(*(simulator.embed([t]) for t in texts))
        scheduler.cancel()
        return simulator, texts, results

    simulator, texts, results = asyncio.run(scenario())
    counter = qwen3_counter()
    expected = sum(counter.count(t) for t in texts)  # the Qwen3 tokenizer plus the appended <|endoftext|>
    assert simulator.stats.tokens == expected
    assert simulator.stats.steps >= expected / 64  # no step took more than its budget
    assert all(r.shape == (1, 8) for r in results)
    np.testing.assert_allclose([np.linalg.norm(r) for r in results], 1.0, atol=1e-5)


@pytest.fixture(scope="module")
def simulated():
    with SimulatedServer("4b", dim=32) as server:
        yield server


def test_simulated_server_speaks_the_api(simulated):
    client = openai.OpenAI(base_url=simulated.url, api_key="x", max_retries=0)
    response = client.embeddings.create(model=simulated.model, input=["one", "two", "three"])
    assert [d.index for d in response.data] == [0, 1, 2] and len(response.data[0].embedding) == 32
    assert len(client.embeddings.create(model=simulated.model, input=["x"], dimensions=8).data[0].embedding) == 8
    tokenized = httpx.post(f"{simulated.url}/tokenize", json={"prompt": "hello world"}).json()
    assert tokenized["count"] == qwen3_counter().count("hello world")
    with pytest.raises(openai.BadRequestError, match="maximum context length"):
        client.embeddings.create(model=simulated.model, input=["word " * 40_000])


@pytest.mark.slow
def test_bench_reports_share_of_capacity_end_to_end():
    result = run_simulated([DATA], dim=32, batch_inputs=4)
    assert result.failed == 0 and result.chunks > 8
    assert result.server["tokens"] == result.tokens  # server and client count the same tokens
    assert result.server["requests"] == result.requests
    assert 0 < result.share_of_capacity <= 1.0


@pytest.mark.slow
def test_bench_run_cli_json(tmp_path):
    done = subprocess.run([sys.executable, "-m", "bench.run", str(DATA / "zh"), "--dim", "16", "--json"],
                          capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["files"] == 3 and result["server"]["model"] == "Qwen/Qwen3-Embedding-4B"
    assert 0 < result["share_of_capacity"] <= 1.0


@pytest.mark.slow
def test_kb_bench_measures_the_users_own_server(simulated, tmp_path):
    """`kb bench --endpoint` is kb's: no simulator of its own, only the client's figures."""
    simulated.reset()
    done = subprocess.run([KB, "bench", str(DATA / "zh"), "--endpoint", simulated.url, "--model", simulated.model,
                           "--json"], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["files"] == 3 and result["failed"] == 0 and result["chunks"] > 0
    assert result["server"] is None and result["share_of_capacity"] is None
    assert result["requests"] == simulated.stats()["requests"] > 0
    assert result["peak_rss_mb"]["pipeline process"] > 20


def test_kb_bench_without_an_endpoint_points_to_the_simulator(tmp_path):
    done = subprocess.run([KB, "bench", str(DATA / "zh")], capture_output=True, text=True, timeout=60, cwd=tmp_path)
    said = " ".join(done.stderr.split())
    assert done.returncode == 2 and "pass --endpoint URL --model NAME" in said and "python -m bench.run" in said
    assert "Traceback" not in done.stderr


def test_stage_accounting_adds_up():
    result = run_simulated([DATA], dim=16)
    cpu = result.cpu_seconds_per_1000_tokens
    assert set(cpu) == {"parse", "chunk+tokenise", "embed client", "store", "total"}
    assert all(v >= 0 for v in cpu.values())
    assert cpu["parse"] > 0 and cpu["chunk+tokenise"] > 0 and cpu["store"] > 0
    assert cpu["parse"] + cpu["chunk+tokenise"] + cpu["store"] <= cpu["total"] + 1e-4
    assert all(v > 0 for v in result.stage_wall_seconds.values())


@pytest.mark.slow
def test_memory_is_reported_by_process_role():
    """A big run's helpers are named (kb-parse, kb-store) and their memory is counted apart from the server's."""
    result = run_simulated([DATA], dim=16, workers=2, store_process=True)
    assert result.failed == 0
    rss = result.peak_rss_mb
    assert {"pipeline process", "parsing workers", "store process", "all kb processes"} <= set(rss)
    assert all(rss[role] > 20 for role in ("pipeline process", "parsing workers", "store process"))
    assert rss["all kb processes"] >= rss["pipeline process"] + rss["store process"] - 1
    from ingest.discover import discover

    assert result.corpus_bytes == sum(p.stat().st_size for p in discover([DATA])[0])


@pytest.mark.slow
def test_bench_into_a_chroma_server_counts_its_memory_apart():
    """With --chroma-server the index lives in `chroma run`: its memory is shown, but not as kb's."""
    result = run_simulated([DATA], dim=16, chroma_server=True)
    assert result.failed == 0 and result.chunks > 8
    assert result.server["inputs"] == result.chunks
    rss = result.peak_rss_mb
    assert rss["Chroma server (not kb's)"] > 20
    assert "store process" not in rss  # a server store needs no process of kb's own
    kb_roles = sum(mb for role, mb in rss.items() if role not in ("all kb processes", "Chroma server (not kb's)"))
    assert rss["all kb processes"] <= kb_roles + 1  # the sum of kb's own roles' peaks bounds it: no server inside


@pytest.mark.slow
def test_bench_run_simulated_endpoints_spreads_the_work(tmp_path):
    done = subprocess.run([sys.executable, "-m", "bench.run", str(DATA), "--simulated-endpoints", "1,2", "--dim", "16",
                           "--json"], capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    one, two = json.loads(done.stdout)
    assert (one["endpoints"], two["endpoints"]) == (1, 2)
    assert one["failed"] == two["failed"] == 0 and one["chunks"] == two["chunks"] > 8
    # Every token is served once, whichever endpoint took it, and both endpoints took a share.
    assert one["tokens_served"] == two["tokens_served"] == two["tokens"]
    assert sum(two["tokens_per_endpoint"]) == two["tokens_served"] and min(two["tokens_per_endpoint"]) > 0
    assert two["client_cores_busy"] > 0 and set(two["cpu_seconds_per_1000_tokens"]) >= {"parse", "store", "total"}


def test_bench_names_the_files_that_failed(tmp_path):
    (tmp_path / "good.txt").write_text("Volcanoes erupt when magma rises through the crust. " * 40)
    (tmp_path / "broken.pdf").write_bytes(b"%PDF-1.7 this is not really a PDF")
    result = run_simulated([tmp_path], dim=16)
    assert result.failed == 1 and result.chunks >= 1
    [(source, reason)] = result.failures
    assert source.endswith("broken.pdf") and "PDF" in reason


@pytest.mark.slow
def test_scale_bench_measures_both_stores_and_its_build_resumes(tmp_path):
    """bench.scale on a small store: exact neighbours are right, ef_search reaches the index, rows are whole."""
    from bench.scale import BATCH, DEFAULT_EF, Vectors, build, run, table
    from ingest.knowledge_base import KnowledgeBase
    from ingest.settings import Settings

    vectors = Vectors(64)
    exact = vectors.exact(2 * BATCH, vectors.queries(2 * BATCH, 5))
    # A stored chunk's nearest neighbour among all is found by brute force across batches.
    both = np.vstack([vectors.batch(0, BATCH), vectors.batch(BATCH, BATCH)])
    assert (exact[:, 0] == np.argmax(vectors.queries(2 * BATCH, 5) @ both.T, axis=1)).all()

    path = tmp_path / f"{2 * BATCH}-64"
    build(path, BATCH, 64)  # a build stopped after its first batch...
    (path / "kb-scale.json").unlink()
    info = build(path, 2 * BATCH, 64)  # ...resumes: the same chunks, the second batch added
    store = KnowledgeBase.open(Settings(chroma_path=path, collection="scale"))
    assert store.count() == 2 * BATCH and info["n"] == 2 * BATCH and len(store.documents()) == 2 * BATCH // 50

    rows = run([2 * BATCH], [64], ["embedded", "server"], tmp_path, [4, DEFAULT_EF], queries_n=30, repeat=20)
    assert [(r["store"], r["ef_search"]) for r in rows] == [("embedded", 4), ("embedded", DEFAULT_EF), ("server", 4),
                                                            ("server", DEFAULT_EF)]
    for row in rows:
        assert 0 < row["recall@10"] <= 1 and row["search_p50_ms"] > 0 and row["disk_mb"] > 0
        assert ("with_embedding_p50_ms" in row) == (row["ef_search"] == DEFAULT_EF)
        assert ("server_rss_mb" in row) == (row["store"] == "server")
    by_ef = {(r["store"], r["ef_search"]): r["recall@10"] for r in rows}
    assert by_ef[("embedded", DEFAULT_EF)] >= by_ef[("embedded", 4)]
    assert by_ef[("server", DEFAULT_EF)] >= by_ef[("server", 4)]
    assert by_ef[("embedded", DEFAULT_EF)] > 0.9
    # The collection is left at kb's ef_search, and the tables name every row.
    assert store.client.get_collection("scale").configuration_json["hnsw"]["ef_search"] == DEFAULT_EF
    assert table(rows).count("| 8,000 | 64 |") == 2 + 2


def test_benchmarks_doc_scale_tables_are_the_recorded_results():
    """docs/benchmarks.md's scale tables are what `bench.scale --report bench/results/scale-*.json` prints, all rows."""
    from bench.scale import table

    results = sorted((ROOT / "bench" / "results").glob("scale-*.json"))
    rows = [row for path in results for row in json.loads(path.read_text())]
    assert {(r["n"], r["dim"]) for r in rows} == {(n, d) for n in (10_000, 100_000, 1_000_000) for d in (1024, 2560)}
    assert table(rows) in (ROOT / "docs" / "benchmarks.md").read_text()
