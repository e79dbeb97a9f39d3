"""`kb ingest` and `kb reembed`: documents into a knowledge base."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer
from rich.markup import escape

from ingest.errors import ConfigError
from ingest.pipeline import ingest, reembed
from ingest.settings import load_settings
from kb_app.cli.options import (
    AsJson,
    BatchInputs,
    BatchTokens,
    ChromaDatabase,
    ChromaPath,
    ChromaTenant,
    ChromaUrl,
    ChunkTokens,
    Collection,
    Config,
    Dimensions,
    Endpoint,
    Headings,
    InstructionName,
    MaxInFlight,
    Model,
    Ocr,
    OcrEngine,
    Overlap,
    QueryTask,
    Tokenizer,
    Workers,
)
from kb_app.cli.output import err, print_json
from kb_app.cli.progress import RichProgress, print_summary

if TYPE_CHECKING:
    from ingest.metrics import Metrics


def ingest_command(
    paths: Annotated[list[Path], typer.Argument(help="Files or folders (walked recursively)")],
    collection: Collection = None,
    endpoint: Endpoint = None,
    model: Model = None,
    chunk_tokens: ChunkTokens = None,
    overlap: Overlap = None,
    headings: Headings = None,
    chroma_path: ChromaPath = None,
    chroma_url: ChromaUrl = None,
    chroma_tenant: ChromaTenant = None,
    chroma_database: ChromaDatabase = None,
    prune: Annotated[bool, typer.Option(help="Remove documents whose files are gone")] = False,
    shard: Annotated[Optional[str], typer.Option(
        help="I/N: take only this worker's share of the files (N workers split a corpus by path) [KB_SHARD]")] = None,
    include: Annotated[Optional[list[str]], typer.Option(help="Only files matching this glob (repeatable)")] = None,
    exclude: Annotated[Optional[list[str]], typer.Option(help="Skip files matching this glob (repeatable)")] = None,
    instruction: InstructionName = None,
    query_task: QueryTask = None,
    dimensions: Dimensions = None,
    tokenizer: Tokenizer = None,
    batch_inputs: BatchInputs = None,
    batch_tokens: BatchTokens = None,
    in_flight: Annotated[Optional[int], typer.Option(
        help="Requests in flight per endpoint; 0 learns it from the server's latency [0]")] = None,
    max_in_flight: MaxInFlight = None,
    workers: Workers = None,
    ocr: Ocr = None,
    ocr_engine: OcrEngine = None,
    lock_wait: Annotated[Optional[float], typer.Option(
        help="Seconds to wait while another process writes to the same embedded store [600]")] = None,
    metrics_port: Annotated[Optional[int], typer.Option(
        help="Serve Prometheus metrics on this port while the run lasts (GET /metrics)")] = None,
    metrics_host: Annotated[str, typer.Option(
        help="Address the metrics listen on (0.0.0.0 for a scraper on another host, e.g. a Kubernetes pod's "
             "Prometheus)")] = "127.0.0.1",
    as_json: AsJson = False,
    config: Config = None,
) -> None:
    """Ingest files and folders into a knowledge base (unchanged files are skipped)."""
    settings = load_settings(
        config, collection=collection, endpoint=endpoint, model=model, chunk_tokens=chunk_tokens, overlap=overlap,
        headings=headings, chroma_path=chroma_path, chroma_url=chroma_url, chroma_tenant=chroma_tenant,
        chroma_database=chroma_database, include=include, exclude=exclude, instruction=instruction,
        query_task=query_task, dimensions=dimensions, tokenizer=tokenizer, batch_inputs=batch_inputs,
        batch_tokens=batch_tokens, in_flight=in_flight, max_in_flight=max_in_flight, workers=workers,
        lock_wait=lock_wait, shard=shard, ocr=ocr,
        ocr_engine=ocr_engine,
    )
    try:
        with RichProgress(err) as progress, _metrics_server(metrics_port, metrics_host) as metrics:
            if metrics is None:
                report = ingest(paths, settings, prune=prune, progress=progress)
            else:
                report = metrics.ingest(paths, settings, prune=prune, progress=progress)
    except KeyboardInterrupt:
        err.print("[yellow]interrupted[/]: files already stored are kept; run the same command again to resume")
        raise typer.Exit(130) from None
    print_summary(report)
    if as_json:
        print_json(report.to_dict())
    raise typer.Exit(0 if report.ok else 1)


@contextmanager
def _metrics_server(port: int | None, host: str) -> Iterator[Metrics | None]:
    """The run's metrics, served over HTTP (Prometheus' text format) until the run ends; None without a port."""
    if port is None:
        yield None
        return
    from prometheus_client import start_http_server

    from ingest.metrics import Metrics

    metrics = Metrics()
    try:
        server, thread = start_http_server(port, addr=host, registry=metrics.registry)
    except OSError as exc:
        raise ConfigError(f"cannot serve metrics on {host}:{port}: {exc.strerror or exc}") from None
    try:
        yield metrics
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def reembed_command(
    to: Annotated[str, typer.Option("--to", help="Name of the new collection")],
    collection: Collection = None,
    endpoint: Endpoint = None,
    model: Model = None,
    dimensions: Dimensions = None,
    tokenizer: Tokenizer = None,
    instruction: InstructionName = None,
    chunk_tokens: ChunkTokens = None,
    overlap: Overlap = None,
    headings: Headings = None,
    chroma_path: ChromaPath = None,
    chroma_url: ChromaUrl = None,
    chroma_tenant: ChromaTenant = None,
    chroma_database: ChromaDatabase = None,
    as_json: AsJson = False,
    config: Config = None,
) -> None:
    """Re-embed a collection's documents with another model into a new collection (the old one is kept)."""
    store = {"chroma_path": chroma_path, "chroma_url": chroma_url, "chroma_tenant": chroma_tenant,
             "chroma_database": chroma_database}
    base = load_settings(config, collection=collection, **store)
    target = load_settings(config, collection=to, endpoint=endpoint, model=model, dimensions=dimensions,
                           tokenizer=tokenizer, instruction=instruction, chunk_tokens=chunk_tokens, overlap=overlap,
                           headings=headings, **store)
    with RichProgress(err) as progress:
        report = reembed(base, target, progress=progress)
    print_summary(report)
    if report.ok:
        err.print(f"{escape(base.collection)} is unchanged; search the new one with --collection {escape(to)}")
    if as_json:
        print_json(report.to_dict())
    raise typer.Exit(0 if report.ok else 1)
