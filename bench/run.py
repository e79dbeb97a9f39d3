"""Ingest a corpus through kb's real pipeline against a simulated GPU server and report throughput against
the server's capacity; or one of the other benchmarks of kb (the peer comparison, endpoint counts side by side,
PDF pages/s), on given paths or a Debian corpus.

The simulated SGLang-like server (bench.simserver) runs in its own process, as a real server would, and
reports how many tokens its simulated GPU processed; the share of capacity is end to end: tokens / (the
whole ingest's wall time x capacity), parsing and Chroma writes included. A real server is measured by
`kb bench --endpoint URL --model NAME` (kb_app.benchmark, which this builds on).

    python -m bench.run PATHS [--corpus docs] [--compare [--repeat 3] | --pdf-pages | --simulated-endpoints 1,4]
"""

from __future__ import annotations

import contextlib
import json
import sys
import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import Annotated, Optional, Sequence

import typer

from bench.baselines import BenchmarkInvalid
from bench.corpus import CorpusError
from bench.servers import SimulatedServer
from ingest.errors import ConfigError, KbError
from ingest.report import Progress
from kb_app.benchmark import BenchResult, run_bench
from kb_app.cli import run_cli
from kb_app.cli.benchmarking import show
from kb_app.cli.options import AsJson, BatchInputs, BatchTokens, MaxInFlight, Workers
from kb_app.cli.output import err
from kb_app.cli.progress import RichProgress
from tests.rigs.servers import ChromaServer

MODEL_SIZES = ("0.6b", "4b", "8b")
CHROMA_APART = "Chroma server (not kb's)"


def run_simulated(
    paths: Sequence[str | Path],
    *,
    model_size: str = "4b",
    dim: int | None = None,
    speed: float = 1.0,
    progress: Progress | None = None,
    store_process: bool | None = None,
    chroma_server: bool = False,
    **flags: object,
) -> BenchResult:
    """kb_app.benchmark.run_bench against a simulated server started here, with the server's own account of
    the run. `flags` are kb settings (batch_inputs, ...). `chroma_server`: into a `chroma run` server started
    here (its memory reported apart from kb's)."""
    with tempfile.TemporaryDirectory(prefix="kb-bench-") as scratch, contextlib.ExitStack() as running:
        log = Path(scratch) / "simserver.log"
        server = running.enter_context(SimulatedServer(model_size, dim, log, speed=speed))
        apart, chroma_url = {}, None
        if chroma_server:
            (Path(scratch) / "chroma-server").mkdir()
            chroma = running.enter_context(ChromaServer(Path(scratch) / "chroma-server", Path(scratch) / "chroma.log"))
            apart, chroma_url = {chroma.process.pid: CHROMA_APART}, chroma.url
        server.reset()
        result = run_bench(paths, endpoint=server.url, model=server.model, progress=progress,
                           store_process=store_process, chroma_url=chroma_url, exclude={server.process.pid},
                           apart=apart, tokenizer=flags.pop("tokenizer", None) or "qwen3", **flags)
        result.server = server.stats()
    result.share_of_capacity = round(result.tokens / (result.seconds * result.server["capacity_tokens_per_s"]), 4)
    return result


def _compare(paths: list[Path], corpus: str | None, repeat: int, model_size: str, dim: int | None,
             as_json: bool) -> None:
    from bench.baselines import compare, print_run, show_comparison

    with err.status("kb, langchain and recipe, one after another (each in its own process)"):
        result = compare(paths, repeat=repeat, model_size=model_size, dim=dim, corpus_name=corpus, on_run=print_run)
    show_comparison(result, as_json)


def _endpoints(paths: list[Path], counts: list[int], model_size: str, speed: float, dim: int | None,
               workers: int | None, as_json: bool) -> None:
    from bench.endpoints import print_rows, run_endpoints

    flags = {"workers": workers} if workers is not None else {}
    with err.status(f"ingesting once per endpoint count: {', '.join(map(str, counts))}"):
        rows = run_endpoints(paths, counts, model_size, speed, dim, **flags)
    if as_json:
        sys.stdout.write(json.dumps(rows, indent=2) + "\n")
    else:
        print_rows(rows)
    raise typer.Exit(1 if any(row["failed"] for row in rows) else 0)


def _pdf_pages(paths: list[Path], workers: list[int], as_json: bool) -> None:
    from bench.pdf_pages import measure, print_runs

    runs = []
    for count in workers:
        with err.status(f"parsing the PDFs with {count} process{'es' if count > 1 else ''}"):
            runs.append(measure(paths, count))
        err.print(f"{count} process(es): {runs[-1].pages:,} pages in {runs[-1].seconds:.1f} s, "
                  f"{runs[-1].pages_per_s:.1f} pages/s, {runs[-1].failed_files} files failed")
    if as_json:
        sys.stdout.write(json.dumps([asdict(r) for r in runs], indent=2) + "\n")
    else:
        print_runs(runs)
    raise typer.Exit(1 if any(r.failed_files for r in runs) else 0)


def _endpoint_counts(text: str | None) -> list[int]:
    if not text:
        return []
    try:
        counts = [int(c) for c in text.split(",")]
    except ValueError:
        counts = []
    if not counts or min(counts) < 1:
        raise ConfigError("--simulated-endpoints takes counts like 1,4")
    return counts


def _corpus_paths(paths: list[Path] | None, corpus: str | None) -> list[Path]:
    from bench.corpus import fetch

    found = list(paths or [])
    if corpus:
        with err.status(f"fetching corpus {corpus} (apt-get download, once)"):
            found += fetch(corpus)
    if not found:
        raise ConfigError("give corpus paths, or --corpus docs|python-library|pdf|large")
    return found


app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)


@app.command(help=__doc__.split("\n\n")[0])
def bench(
    paths: Annotated[Optional[list[Path]], typer.Argument(help="Corpus: files or folders")] = None,
    corpus: Annotated[Optional[str], typer.Option(
        help="A real corpus fetched from Debian's archive into ~/.cache/kb/bench: docs, python-library, pdf or large",
    )] = None,
    compare: Annotated[bool, typer.Option(
        "--compare", help="kb vs a LangChain pipeline and the deployment-guide recipe, same simulated server")] = False,
    repeat: Annotated[int, typer.Option(help="With --compare: rounds, order rotated, medians reported", min=1)] = 1,
    pdf_pages: Annotated[bool, typer.Option(
        "--pdf-pages", help="Pages/s parsing the PDFs through kb's loader, with 1 and 2 processes (or --workers)",
    )] = False,
    simulated_endpoints: Annotated[Optional[str], typer.Option(
        help="Compare endpoint counts side by side, e.g. 1,4: that many simulated servers, one run each")] = None,
    speed: Annotated[float, typer.Option(help="Multiply each simulated GPU's speed (e.g. 0.25)", min=0.01)] = 1.0,
    model_size: Annotated[str, typer.Option(help="Simulated Qwen3-Embedding size: 0.6b, 4b or 8b")] = "4b",
    dim: Annotated[Optional[int], typer.Option(help="Simulated vector dimension (default: the model's)")] = None,
    batch_inputs: BatchInputs = None,
    batch_tokens: BatchTokens = None,
    max_in_flight: MaxInFlight = None,
    workers: Workers = None,
    chroma_server: Annotated[bool, typer.Option(
        "--chroma-server", help="Store into a `chroma run` server started for the run (its memory shown apart)",
    )] = False,
    as_json: AsJson = False,
) -> None:
    if model_size not in MODEL_SIZES:
        raise ConfigError("--model-size must be 0.6b, 4b or 8b")
    if sum(map(bool, (compare, pdf_pages, simulated_endpoints))) > 1:
        raise ConfigError("--compare, --pdf-pages and --simulated-endpoints are separate benchmarks: pick one")
    counts = _endpoint_counts(simulated_endpoints)
    found = _corpus_paths(paths, corpus)
    if pdf_pages:
        _pdf_pages(found, [workers] if workers else [1, 2], as_json)
    elif counts:
        _endpoints(found, counts, model_size, speed, dim, workers, as_json)
    elif compare:
        if batch_inputs or batch_tokens or max_in_flight or workers is not None:
            raise ConfigError("--compare runs every pipeline with its defaults against the simulated server")
        _compare(found, corpus, repeat, model_size, dim, as_json)
    else:
        flags = {"batch_inputs": batch_inputs, "batch_tokens": batch_tokens, "max_in_flight": max_in_flight,
                 "workers": workers}
        with RichProgress(err) as progress:
            result = run_simulated(found, model_size=model_size, dim=dim, speed=speed, progress=progress,
                                   chroma_server=chroma_server, **flags)
        show(result, as_json)


def main() -> None:
    run_cli(app, expected=(KbError, CorpusError, BenchmarkInvalid))


if __name__ == "__main__":
    main()
