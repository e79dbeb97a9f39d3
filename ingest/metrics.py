"""Prometheus metrics for `kb serve` and `kb ingest`: what an operator running kb beside SGLang or vLLM watches.

A `Metrics` owns a registry of its own (one per server or ingest run, never prometheus_client's global one).
Searches are counted as they end (`searched`); everything else is read from live state when Prometheus scrapes
(a collector): the query cache's counts, and for ingest runs the counts a `CountingProgress` keeps and each
embedding endpoint's `EndpointStats` (requests, retries, errors, in flight, busy seconds). The busy seconds
over the run's seconds is the share of the run the GPU had work: the figure that says whether kb keeps it fed.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence
from urllib.parse import urlsplit, urlunsplit

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from .embeddings import Embedder, EndpointStats, make_embedder
from .report import FileOutcome, IngestReport, Progress, Silent, Status

if TYPE_CHECKING:
    from .settings import Settings

EMBEDDED = "embedded"  # the endpoint label of the in-process model
OUTCOMES: tuple[Status, ...] = ("ingested", "unchanged", "failed", "pruned")
# Search stages run from a millisecond (a BM25 lookup) to seconds (a reranker on a busy GPU).
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class IngestCounts:
    """An ingest's counts summed over runs (a server that watches a folder ingests again and again)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()  # the pipeline's thread writes, the scrape's thread reads
        self.files = dict.fromkeys(OUTCOMES, 0)
        self.chunks = self.tokens = 0  # done: embedded or reused
        self.reused_chunks = self.reused_tokens = 0
        self.runs = 0
        self.finished_seconds = 0.0  # wall seconds of the runs that ended
        self.running: dict[int, float] = {}  # runs in progress: monotonic start time by id


class CountingProgress(Progress):
    """A run's Progress that counts into `IngestCounts` and forwards every event to the progress it wraps."""

    def __init__(self, counts: IngestCounts, inner: Progress | None = None) -> None:
        self.counts, self.inner = counts, inner or Silent()
        self.done = dict.fromkeys(OUTCOMES, 0)  # this run's, reconciled with its report at the end

    def start(self, files: int, total_bytes: int) -> None:
        self.inner.start(files, total_bytes)

    def planned(self, chunks: int, tokens: int) -> None:
        self.inner.planned(chunks, tokens)

    def embedded(self, chunks: int, tokens: int) -> None:
        with self.counts.lock:
            self.counts.chunks += chunks
            self.counts.tokens += tokens
        self.inner.embedded(chunks, tokens)

    def reused(self, chunks: int, tokens: int) -> None:
        with self.counts.lock:
            self.counts.reused_chunks += chunks
            self.counts.reused_tokens += tokens
        getattr(self.inner, "reused", Progress.reused)(chunks, tokens)

    def file_progress(self, source: str, done: int, total: int) -> None:
        self.inner.file_progress(source, done, total)

    def file_done(self, outcome: FileOutcome, size: int) -> None:
        with self.counts.lock:
            self.counts.files[outcome.status] += 1
            self.done[outcome.status] += 1
        self.inner.file_done(outcome, size)

    def waiting(self, message: str) -> None:
        getattr(self.inner, "waiting", lambda _message: None)(message)

    def finished(self, report: IngestReport) -> None:
        """Count the outcomes the pipeline reports only in its report (unchanged and pruned files, paths
        that could not be read)."""
        with self.counts.lock:
            for status in OUTCOMES:
                missing = len(report.of(status)) - self.done[status]
                if missing > 0:
                    self.counts.files[status] += missing
                    self.done[status] += missing


class Metrics:
    """kb's metrics in a registry of their own: `exposition()` is the Prometheus text format of them all."""

    def __init__(self, *, serving: bool = False, query_cache: Callable[[], Any] | None = None) -> None:
        """`serving`: a server's, with searches and the query cache (`query_cache` returns it, or None when there
        is none); an ingest run's has the ingest and endpoint metrics alone."""
        self.registry = CollectorRegistry()
        self.serving = serving
        self.ingest_counts = IngestCounts()
        self._embedders: list[Embedder] = []  # those in use now, read at each scrape
        self._retired: dict[str, EndpointStats] = {}  # endpoints of embedders no longer in use, summed
        self.registry.register(_LiveCollector(self, query_cache))
        if serving:
            self._serving_metrics()

    def _serving_metrics(self) -> None:
        self.searches = Counter("kb_searches_total", "Searches answered, by mode (dense, hybrid, +rerank)",
                                ["mode"], registry=self.registry)
        self.search_failures = Counter("kb_search_failures_total", "Searches that ended in an error",
                                       registry=self.registry)
        self.search_seconds = Histogram(
            "kb_search_seconds", "Search latency by stage: embed, dense (vector), lexical (BM25), fuse, rerank, "
            "and total", ["stage"], buckets=LATENCY_BUCKETS, registry=self.registry)
        self.searches_in_flight = Gauge("kb_searches_in_flight", "Searches running now", registry=self.registry)
        self.answers = Counter("kb_answers_total", "Questions retrieved for an answer (kb ask API, chat "
                               "completions)", registry=self.registry)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)

    @contextmanager
    def searching(self) -> Iterator[Callable[[Any], None]]:
        """Count a search while it runs; call the function given with its SearchResponse when it ends."""
        with self.searches_in_flight.track_inprogress():
            try:
                yield self.searched
            except BaseException:
                self.search_failures.inc()
                raise

    def searched(self, response: Any) -> None:  # noqa: ANN401 - kb_app.search.SearchResponse (no import cycle)
        """Count one search by mode and observe each stage's seconds, and the whole search's."""
        self.searches.labels(response.mode).inc()
        for stage, seconds in response.timings.items():
            self.search_seconds.labels(stage).observe(seconds)
        self.search_seconds.labels("total").observe(response.seconds)

    @contextmanager
    def watching(self, embedder: Embedder) -> Iterator[None]:
        """Read `embedder`'s endpoints at each scrape while it is in use; afterwards its counts are kept summed."""
        with self.ingest_counts.lock:
            self._embedders.append(embedder)
        try:
            yield
        finally:
            with self.ingest_counts.lock:
                self._embedders.remove(embedder)
                for url, stats in _endpoints_of(embedder).items():
                    _add(self._retired.setdefault(url, EndpointStats()), stats)

    def endpoints(self) -> dict[str, EndpointStats]:
        """Every endpoint's counts so far: the retired embedders' and those in use now, summed by URL."""
        with self.ingest_counts.lock:
            out = {url: _add(EndpointStats(), stats) for url, stats in self._retired.items()}
            for embedder in self._embedders:
                for url, stats in _endpoints_of(embedder).items():
                    _add(out.setdefault(url, EndpointStats()), stats)
        return out

    @contextmanager
    def run(self, progress: Progress | None = None,
            embedder: Embedder | None = None) -> Iterator[CountingProgress]:
        """One ingest run, counted: pass the progress this yields to the pipeline, then its report to
        `finished` (the pipeline tells unchanged and pruned files only in the report)."""
        counting = CountingProgress(self.ingest_counts, progress)
        counts = self.ingest_counts
        with counts.lock:
            counts.runs += 1
            counts.running[id(counting)] = time.monotonic()
        try:
            if embedder is None:
                yield counting
            else:
                with self.watching(embedder):
                    yield counting
        finally:
            with counts.lock:
                counts.finished_seconds += time.monotonic() - counts.running.pop(id(counting))

    def ingest(self, paths: Sequence[str | Path], settings: Settings, *, progress: Progress | None = None,
               **options: Any) -> IngestReport:  # noqa: ANN401 - ingest_async's keyword options
        """`ingest.pipeline.ingest`, counted, with an embedder made here so its endpoints are counted too."""
        return asyncio.run(self.ingest_async(paths, settings, progress=progress, **options))

    async def ingest_async(self, paths: Sequence[str | Path], settings: Settings, *,
                           progress: Progress | None = None, **options: Any) -> IngestReport:  # noqa: ANN401
        """`ingest`'s run in a running event loop (the embedder's connections are closed in it)."""
        from .pipeline import ingest_async  # the store and the parsers: a scrape or a search needs none of them

        embedder = make_embedder(settings)
        try:
            with self.run(progress, embedder) as counting:
                report = await ingest_async(paths, settings, progress=counting, embedder=embedder, **options)
                counting.finished(report)
        finally:
            await embedder.aclose()
        return report


def _without_credentials(url: str) -> str:
    """An endpoint URL as a label: a user and password written into it (http://user:secret@host) are left out."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return urlunsplit(parts._replace(netloc=parts.netloc.rsplit("@", 1)[1]))


def _endpoints_of(embedder: Embedder) -> dict[str, EndpointStats]:
    """A remote embedder's endpoints; the embedded model's requests and inputs as one "endpoint", `embedded`
    (it has no server to be busy: its busy seconds stay 0)."""
    stats = embedder.stats
    if stats.endpoints or not stats.requests:
        return dict(stats.endpoints)
    return {EMBEDDED: EndpointStats(requests=stats.requests, retries=stats.retries, inputs=stats.inputs)}


def _add(total: EndpointStats, more: EndpointStats) -> EndpointStats:
    """Add `more`'s counts into `total` (busy seconds as they stand now)."""
    total.requests += more.requests
    total.retries += more.retries
    total.inputs += more.inputs
    total.in_flight += more.in_flight
    total._busy += more.busy_seconds
    for kind, count in list(more.errors.items()):
        total.errors[kind] = total.errors.get(kind, 0) + count
    return total


class _LiveCollector(Collector):
    """What is read at scrape time: the query cache, the ingest runs' counts and the embedding endpoints.

    A counter read from live state could step back for a moment (the chunks reused are told just after the
    chunks done); Prometheus takes any decrease for a restart, so each value shown is at least the last one.
    """

    def __init__(self, metrics: Metrics, query_cache: Callable[[], Any] | None) -> None:
        self.metrics, self.query_cache = metrics, query_cache
        self._shown: dict[tuple[str, ...], float] = {}
        self._lock = threading.Lock()

    def _rising(self, key: tuple[str, ...], value: float) -> float:
        with self._lock:
            value = max(value, self._shown.get(key, 0.0))
            self._shown[key] = value
        return value

    def collect(self) -> Iterator[Metric]:
        if self.metrics.serving:
            yield from self._cache()
        yield from self._ingest()
        yield from self._endpoints()

    def _cache(self) -> Iterator[Metric]:
        cache = self.query_cache() if self.query_cache else None
        values = {}
        for name in ("hits", "misses", "entries", "bytes"):
            value = getattr(cache, name, 0)
            values[name] = value() if callable(value) else value
        yield CounterMetricFamily("kb_query_cache_hits", "Query embeddings answered from the cache",
                                  value=values["hits"])
        yield CounterMetricFamily("kb_query_cache_misses", "Query embeddings the cache did not hold",
                                  value=values["misses"])
        yield GaugeMetricFamily("kb_query_cache_entries", "Query embeddings held in the cache",
                                value=values["entries"])
        yield GaugeMetricFamily("kb_query_cache_bytes", "Bytes the cached query embeddings take",
                                value=values["bytes"])

    def _ingest(self) -> Iterator[Metric]:
        counts = self.metrics.ingest_counts
        with counts.lock:
            files = dict(counts.files)
            done, tokens = counts.chunks, counts.tokens
            reused, reused_tokens = counts.reused_chunks, counts.reused_tokens
            now = time.monotonic()
            seconds = counts.finished_seconds + sum(now - began for began in counts.running.values())
            running, runs = len(counts.running), counts.runs
        family = CounterMetricFamily("kb_ingest_files", "Files by outcome: ingested, unchanged, failed, pruned",
                                     labels=["outcome"])
        for status in OUTCOMES:
            family.add_metric([status], files[status])
        yield family
        yield CounterMetricFamily("kb_ingest_chunks_embedded", "Chunks embedded by the model",
                                  value=self._rising(("chunks",), done - reused))
        yield CounterMetricFamily("kb_ingest_chunks_reused", "Chunks whose stored vectors were reused",
                                  value=reused)
        yield CounterMetricFamily("kb_ingest_tokens_embedded", "Tokens sent to the model to embed (kb's count)",
                                  value=self._rising(("tokens",), tokens - reused_tokens))
        yield CounterMetricFamily("kb_ingest_tokens_reused", "Tokens of the chunks reused", value=reused_tokens)
        yield CounterMetricFamily("kb_ingest_runs", "Ingest runs started", value=runs)
        yield GaugeMetricFamily("kb_ingest_running", "Ingest runs in progress", value=running)
        yield CounterMetricFamily("kb_ingest_run_seconds", "Wall seconds spent in ingest runs (the GPU share's "
                                  "denominator)", value=self._rising(("run_seconds",), seconds))

    def _endpoints(self) -> Iterator[Metric]:
        endpoints = self.metrics.endpoints()
        labels = ["endpoint"]
        requests = CounterMetricFamily("kb_embed_requests", "Embedding requests sent, by endpoint", labels=labels)
        retries = CounterMetricFamily("kb_embed_retries", "Embedding requests retried after a transient fault",
                                      labels=labels)
        errors = CounterMetricFamily("kb_embed_errors", "Embedding requests that failed, by endpoint and kind "
                                     "(HTTP status, timeout, connection, bad answer)", labels=["endpoint", "kind"])
        inputs = CounterMetricFamily("kb_embed_inputs", "Texts embedded, by endpoint", labels=labels)
        in_flight = GaugeMetricFamily("kb_embed_requests_in_flight", "Embedding requests in flight now",
                                      labels=labels)
        busy = CounterMetricFamily("kb_embed_busy_seconds", "Seconds the endpoint had at least one request in "
                                   "flight", labels=labels)
        for raw, stats in sorted(endpoints.items()):
            url = _without_credentials(raw)
            requests.add_metric([url], stats.requests)
            retries.add_metric([url], stats.retries)
            inputs.add_metric([url], stats.inputs)
            in_flight.add_metric([url], stats.in_flight)
            busy.add_metric([url], self._rising(("busy", url), stats.busy_seconds))
            for kind, count in sorted(stats.errors.items()):
                errors.add_metric([url, kind], count)
        yield from (requests, retries, errors, inputs, in_flight, busy)
