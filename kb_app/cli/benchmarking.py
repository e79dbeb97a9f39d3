"""`kb bench --endpoint URL --model NAME`: ingestion throughput against the user's own embedding server.

The simulated GPU server, the peer comparison and the other benchmarks of kb itself are `python -m bench.run`
(and `python -m bench.<tool>`) in a checkout; they reuse `show`."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer
from rich.markup import escape
from rich.table import Table

from ingest.errors import ConfigError
from kb_app.cli.options import AsJson, BatchInputs, BatchTokens, MaxInFlight, Model, Workers
from kb_app.cli.output import err, out, print_json
from kb_app.cli.progress import RichProgress

if TYPE_CHECKING:  # the pipeline is imported when a benchmark runs, not at every `kb` start
    from kb_app.benchmark import BenchResult

NO_ENDPOINT = ("kb bench measures your embedding server: pass --endpoint URL --model NAME. For the simulated "
               "GPU server and the comparisons with other pipelines, run `python -m bench.run PATHS` in a checkout "
               "of kb")


def result_table(result: BenchResult) -> Table:
    table = Table("measure", "value", box=None)
    table.add_row("files (failed)", f"{result.files} ({result.failed}), {result.corpus_bytes / 1e6:,.1f} MB read")
    table.add_row("chunks / tokens", f"{result.chunks:,} / {result.tokens:,}")
    table.add_row("wall time", f"{result.seconds:.1f} s")
    table.add_row("end to end", f"{result.tokens_per_s:,} tokens/s, {result.chunks_per_s} chunks/s")
    table.add_row("requests / retries", f"{result.requests} / {result.retries}")
    if result.server:
        table.add_row("simulated server",
                      f"{result.server['model']}, capacity {result.server['capacity_tokens_per_s']:,} tokens/s")
        table.add_row("GPU busy", f"{result.server['busy_s']:.1f} s of {result.seconds:.1f} s")
        table.add_row("share of capacity (end to end)", f"{result.share_of_capacity:.1%}")
    for stage, seconds in result.stage_wall_seconds.items():
        table.add_row(f"wall: {stage}", f"{seconds:.1f} s")
    for stage, seconds in result.cpu_seconds_per_1000_tokens.items():
        table.add_row(f"client CPU / 1k tokens: {stage}", f"{seconds * 1000:.2f} ms")
    for what, mb in (result.peak_rss_mb or {}).items():
        table.add_row(f"peak RSS: {what}", f"{mb:,.0f} MB")
    for source, reason in result.failures:
        table.add_row("failed", escape(f"{source}: {reason}"))
    return table


def show(result: BenchResult, as_json: bool) -> None:
    """The result on stdout; exit 1 if a file failed."""
    if as_json:
        print_json(result.to_dict())
    else:
        out.print(result_table(result))
    raise typer.Exit(0 if not result.failed else 1)


def bench_command(
    paths: Annotated[Optional[list[Path]], typer.Argument(help="Corpus: files or folders")] = None,
    endpoint: Annotated[Optional[str], typer.Option(help="Your OpenAI-compatible embedding server's base URL")] = None,
    model: Model = None,
    batch_inputs: BatchInputs = None,
    batch_tokens: BatchTokens = None,
    max_in_flight: MaxInFlight = None,
    workers: Workers = None,
    as_json: AsJson = False,
) -> None:
    """Measure ingestion throughput against your embedding server, into a scratch store.

    The simulated GPU server and the comparisons with other pipelines: `python -m bench.run` in a checkout of kb.
    """
    from kb_app.benchmark import run_bench

    if not endpoint:
        raise ConfigError(NO_ENDPOINT)
    if not model:
        raise ConfigError("with --endpoint, name the served model with --model")
    if not paths:
        raise ConfigError("give the corpus to ingest: files or folders")
    with RichProgress(err) as progress:
        result = run_bench(paths, endpoint=endpoint, model=model, progress=progress, batch_inputs=batch_inputs,
                           batch_tokens=batch_tokens, max_in_flight=max_in_flight, workers=workers)
    show(result, as_json)
