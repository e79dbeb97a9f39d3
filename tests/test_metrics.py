"""Prometheus metrics as a scraper meets them: `kb serve`'s /metrics (a real server, real searches), an ingest
run's counts against the fake server (scripted to push back, so retries move), `kb ingest --metrics-port` scraped
while it runs, and the Grafana dashboard's queries checked against the names kb exposes. Every scrape is parsed
with prometheus-client's own parser."""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import time
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from ingest.errors import SearchError
from ingest.metrics import CountingProgress, IngestCounts, Metrics
from ingest.report import FileOutcome, Progress
from ingest.settings import load_settings
from kb_app.service import KnowledgeService
from tests.conftest import DATA, ROOT
from tests.rigs.servers import free_port, start_server, stop, wait_http
from tests.test_cli import KB, kb

TOKEN = "metrics-token-7d1e"
DASHBOARD = ROOT / "deploy" / "grafana" / "kb.json"


def samples(text: str) -> dict[tuple[str, frozenset], float]:
    """Every sample of a scrape by name and labels."""
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(scrape: dict, name: str, **labels: str) -> float:
    return scrape.get((name, frozenset(labels.items())), 0.0)


def exposed_names(text: str) -> set[str]:
    """The series names a scrape can hold: each family's, with the suffixes its type adds."""
    names = set()
    for family in text_string_to_metric_families(text):
        suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"),
                    "summary": ("_sum", "_count")}.get(family.type, ("",))
        names |= {family.name + suffix for suffix in suffixes} | {s.name for s in family.samples}
    return names


class Recorder(Progress):
    """A progress display that keeps what it was told, to see the counting one forwards everything."""

    def __init__(self) -> None:
        self.events: list[tuple] = []

    def embedded(self, chunks: int, tokens: int) -> None:
        self.events.append(("embedded", chunks, tokens))

    def reused(self, chunks: int, tokens: int) -> None:
        self.events.append(("reused", chunks, tokens))

    def file_done(self, outcome: FileOutcome, size: int) -> None:
        self.events.append(("file_done", outcome.status, size))


def test_reused_chunks_are_not_counted_as_embedded_and_counters_never_step_back():
    metrics = Metrics()
    counts: IngestCounts = metrics.ingest_counts
    inner = Recorder()
    with metrics.run(inner) as progress:
        assert isinstance(progress, CountingProgress) and counts.running
        progress.embedded(10, 1000)
        progress.reused(4, 400)
        progress.file_done(FileOutcome("a.md", "ingested", 10, 1000), 123)
        first = samples(metrics.exposition().decode())
        progress.embedded(5, 500)  # a scrape now sees 11 done - 4 reused, before the reuse is told
        between = samples(metrics.exposition().decode())
        progress.reused(5, 500)
        after = samples(metrics.exposition().decode())
    assert inner.events == [("embedded", 10, 1000), ("reused", 4, 400), ("file_done", "ingested", 123),
                            ("embedded", 5, 500), ("reused", 5, 500)]
    assert value(first, "kb_ingest_chunks_embedded_total") == 6
    assert value(first, "kb_ingest_chunks_reused_total") == 4
    assert value(first, "kb_ingest_tokens_embedded_total") == 600
    assert value(first, "kb_ingest_files_total", outcome="ingested") == 1
    assert value(between, "kb_ingest_chunks_embedded_total") == 11
    assert value(after, "kb_ingest_chunks_embedded_total") == 11  # not 6 again: Prometheus would see a reset
    assert value(after, "kb_ingest_running") == 1 and not counts.running
    assert value(samples(metrics.exposition().decode()), "kb_ingest_running") == 0


@pytest.mark.slow
def test_an_ingest_run_counts_files_chunks_tokens_and_requests_by_endpoint(corpus, store, fake_server):
    settings = load_settings(endpoint=[fake_server.url], model="fake-embed", tokenizer="qwen3", chroma_path=store,
                             chunk_tokens=128, overlap=16, batch_inputs=4, max_in_flight=3)
    fake_server.script("429")  # the first request is pushed back: one error, one retry
    metrics = Metrics()
    report = metrics.ingest([corpus], settings)
    first = samples(metrics.exposition().decode())
    url = fake_server.url
    assert report.ok and len(report.of("ingested")) == 8
    assert value(first, "kb_ingest_files_total", outcome="ingested") == 8
    assert value(first, "kb_ingest_chunks_embedded_total") == report.chunks == len(fake_server.embedded_texts)
    assert value(first, "kb_ingest_tokens_embedded_total") == report.tokens > 0
    assert value(first, "kb_embed_requests_total", endpoint=url) == fake_server.requests == report.stats.requests
    assert value(first, "kb_embed_retries_total", endpoint=url) == 1
    assert value(first, "kb_embed_errors_total", endpoint=url, kind="429") == 1
    assert value(first, "kb_embed_inputs_total", endpoint=url) == report.chunks
    assert value(first, "kb_embed_requests_in_flight", endpoint=url) == 0
    busy, run = value(first, "kb_embed_busy_seconds_total", endpoint=url), value(first, "kb_ingest_run_seconds_total")
    assert 0 < busy < run  # the endpoint was busy for part of the run: the GPU share's two sides

    (corpus / "en" / "honeybees.rst").unlink()
    again = metrics.ingest([corpus], settings, prune=True)
    second = samples(metrics.exposition().decode())
    assert len(again.of("unchanged")) == 7 and len(again.of("pruned")) == 1
    assert value(second, "kb_ingest_files_total", outcome="unchanged") == 7
    assert value(second, "kb_ingest_files_total", outcome="pruned") == 1
    assert value(second, "kb_ingest_files_total", outcome="ingested") == 8  # counts add up over runs
    assert value(second, "kb_ingest_runs_total") == 2
    assert value(second, "kb_embed_requests_total", endpoint=url) == fake_server.requests  # nothing new embedded

    solar = corpus / "en" / "solar-power.md"  # one paragraph edited: its section is embedded, the rest reused
    solar.write_text(solar.read_text().replace("very little under heavy cloud", "little under a thick overcast"))
    sent = len(fake_server.embedded_texts)
    edited = metrics.ingest([corpus], settings)
    third = samples(metrics.exposition().decode())
    [outcome] = edited.of("ingested")
    embedded = value(third, "kb_ingest_chunks_embedded_total") - value(second, "kb_ingest_chunks_embedded_total")
    reused = value(third, "kb_ingest_chunks_reused_total")
    assert embedded == len(fake_server.embedded_texts) - sent and 0 < embedded < reused
    assert embedded + reused == outcome.chunks
    assert 0 < value(third, "kb_ingest_tokens_reused_total") < outcome.tokens

    service = KnowledgeService(settings)  # a server's: its searches and answers are counted as they end
    service.retrieve("how do bees make honey", mode="hybrid")
    with pytest.raises(SearchError):
        service.search("volcanoes", collection="nope")
    served = samples(service.metrics.exposition().decode())
    assert value(served, "kb_answers_total") == 1 and value(served, "kb_searches_total", mode="hybrid") == 1
    assert value(served, "kb_search_failures_total") == 1 and value(served, "kb_searches_in_flight") == 0


@pytest.mark.slow
def test_kb_ingest_serves_metrics_while_it_runs(tmp_path, fake_server):
    shutil.copytree(DATA / "en", tmp_path / "docs")
    fake_server.delay = 0.3  # seconds a request: the run lasts long enough to be scraped in the middle
    port = free_port()
    process = subprocess.Popen(
        [KB, "ingest", "docs", "--endpoint", fake_server.url, "--model", "fake-embed", "--tokenizer", "qwen3",
         "--chroma-path", str(tmp_path / "chroma"), "--batch-inputs", "8", "--in-flight", "1",
         "--metrics-port", str(port)],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    midway = None
    try:
        while process.poll() is None and midway is None:
            try:
                scrape = samples(httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text)
            except httpx.TransportError:
                time.sleep(0.05)  # not listening yet
                continue
            if value(scrape, "kb_embed_requests_total", endpoint=fake_server.url) >= 2:
                midway = scrape
            time.sleep(0.05)
        output = process.communicate(timeout=300)[0]
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, output
    assert midway is not None, "the run ended before a scrape saw its requests"
    assert value(midway, "kb_ingest_running") == 1
    assert value(midway, "kb_embed_requests_in_flight", endpoint=fake_server.url) <= 1  # --in-flight 1
    assert 0 < value(midway, "kb_ingest_chunks_embedded_total") < len(fake_server.embedded_texts)
    assert not [name for name, _ in midway if name.startswith("kb_search")]  # an ingest's metrics alone
    with pytest.raises(httpx.TransportError):  # served for the run's duration only
        httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5)


def test_a_metrics_port_in_use_is_one_message_before_anything_is_read(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = kb("ingest", str(DATA / "en" / "sourdough.txt"), "--chroma-path", str(tmp_path / "chroma"),
                    "--metrics-port", str(port), cwd=tmp_path)
    assert result.returncode == 2 and f"cannot serve metrics on 127.0.0.1:{port}" in result.stderr
    assert not (tmp_path / "chroma").exists()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """`kb serve` with a token on the sample corpus (the embedded model); yields its base URL."""
    work = tmp_path_factory.mktemp("serve-metrics")
    shutil.copytree(DATA, work / "data", ignore=shutil.ignore_patterns("chroma"))
    kb("ingest", "data/en", cwd=work, check=0)
    port = free_port()
    env = {**os.environ, "KB_API_TOKEN": TOKEN, "KB_UPLOAD_DIR": str(work / "uploads")}
    log = work / "serve.log"
    process = start_server([KB, "serve", "--port", str(port)], log, env=env, cwd=work)
    try:
        wait_http(f"http://127.0.0.1:{port}/health", process, log=log)
        yield f"http://127.0.0.1:{port}"
    finally:
        stop(process)


@pytest.mark.slow
def test_kb_serve_metrics_parse_and_move_with_searches_cache_hits_and_uploads(server):
    assert httpx.get(f"{server}/metrics").status_code == 401  # behind the token, as every route but /health
    with httpx.Client(base_url=server, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=120) as client:
        answer = client.get("/metrics")
        assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/plain")
        before = samples(answer.text)
        assert exposed_names(answer.text) == exposed_names(Metrics(serving=True).exposition().decode())
        for mode in ("dense", "dense", "hybrid"):  # the same question three times: embedded once
            assert client.post("/v1/search", json={"query": "how do volcanoes erupt", "mode": mode}).status_code == 200
        uploaded = client.post("/v1/documents", files={"files": ("bees.md", b"# Bees\n\nBees make honey.\n")})
        assert uploaded.status_code == 200, uploaded.text
        after = samples(client.get("/metrics").text)

    def moved(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert moved("kb_searches_total", mode="dense") == 2 and moved("kb_searches_total", mode="hybrid") == 1
    assert moved("kb_search_seconds_count", stage="total") == 3
    assert moved("kb_search_seconds_count", stage="embed") == 3
    assert moved("kb_search_seconds_count", stage="lexical") == 1
    assert moved("kb_search_seconds_bucket", stage="total", le="+Inf") == 3
    assert moved("kb_query_cache_misses_total") == 1 and moved("kb_query_cache_hits_total") == 2
    assert value(after, "kb_query_cache_entries") >= 1 and value(after, "kb_query_cache_bytes") > 0
    assert value(after, "kb_searches_in_flight") == 0
    assert moved("kb_ingest_files_total", outcome="ingested") == 1
    assert moved("kb_ingest_chunks_embedded_total") >= 1
    assert moved("kb_embed_inputs_total", endpoint="embedded") >= 1


def dashboard_expressions(dashboard: dict) -> list[str]:
    """Every PromQL expression in a Grafana dashboard's panels (rows' nested panels too)."""
    found = []
    for panel in dashboard["panels"]:
        for each in [panel, *panel.get("panels", [])]:
            found += [target["expr"] for target in each.get("targets", []) if target.get("expr")]
    return found


def test_the_grafana_dashboard_queries_only_metrics_kb_exposes():
    dashboard = json.loads(Path(DASHBOARD).read_text())
    expressions = dashboard_expressions(dashboard)
    assert len(expressions) >= 12
    exposed = exposed_names(Metrics(serving=True).exposition().decode())
    used = {name for expr in expressions for name in re.findall(r"\bkb_\w+", expr)}
    assert used and not used - exposed, f"not exposed by kb: {sorted(used - exposed)}"
    for needed in ("kb_ingest_chunks_embedded_total", "kb_embed_busy_seconds_total", "kb_ingest_run_seconds_total",
                   "kb_embed_retries_total", "kb_ingest_files_total", "kb_search_seconds_bucket",
                   "kb_query_cache_hits_total", "kb_embed_requests_in_flight"):
        assert needed in used  # the panels an operator needs: throughput, GPU share, retries, failures, latency
    datasources = {json.dumps(p.get("datasource")) for p in dashboard["panels"] if p["type"] != "row"}
    assert datasources == {json.dumps({"type": "prometheus", "uid": "${DS_PROMETHEUS}"})}


def test_an_endpoint_label_never_carries_credentials_written_into_its_url():
    from ingest.metrics import _without_credentials

    assert _without_credentials("http://kb:s3cret@gpu-1:30000/v1") == "http://gpu-1:30000/v1"
    assert _without_credentials("http://gpu-1:30000/v1") == "http://gpu-1:30000/v1"
