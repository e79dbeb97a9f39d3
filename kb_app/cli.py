"""`kb`: ingest, search and report, as a thin shell over the library.

Exit codes: 0 success; 1 some files failed (the rest were ingested); 2 kb could not run (bad settings,
model mismatch, store unreachable). Progress and summaries go to stderr, `--json` output to stdout.
"""

from __future__ import annotations

import json
import sys
from dataclasses import asdict
import time
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, ProgressColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table
from rich.text import Text

from ingest.errors import KbError
from ingest.pipeline import FileOutcome, IngestReport, ingest, reembed
from ingest.settings import Settings, load_settings
from ingest.store import delete_documents, parse_where, status

app = typer.Typer(
    name="kb",
    help="Turn a folder of documents into a searchable, multilingual knowledge base.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
err = Console(stderr=True)
out = Console(soft_wrap=True)

# Options shared by every command: where the store is and which model reads it.
Collection = Annotated[Optional[str], typer.Option("--collection", "-c", help="Knowledge base name [KB_COLLECTION]")]
ChromaPath = Annotated[Optional[Path], typer.Option(help="Embedded Chroma folder [KB_CHROMA_PATH; data/chroma]")]
ChromaUrl = Annotated[Optional[str], typer.Option(help="Chroma server URL, e.g. http://127.0.0.1:8000 [KB_CHROMA_URL]")]
ChromaTenant = Annotated[Optional[str], typer.Option(help="Chroma server tenant [KB_CHROMA_TENANT; default_tenant]")]
ChromaDatabase = Annotated[Optional[str], typer.Option(
    help="Chroma server database; kb ingest creates it if missing [KB_CHROMA_DATABASE; default_database]")]
Endpoint = Annotated[
    Optional[list[str]],
    typer.Option(help="OpenAI-compatible base URL, repeatable [KB_ENDPOINT, comma-separated]; none: embedded model"),
]
Model = Annotated[Optional[str], typer.Option(help="Served model name [KB_MODEL]")]
Config = Annotated[Optional[Path], typer.Option(help="TOML config file [KB_CONFIG; ./kb.toml]")]
# How documents become vectors: shared by the commands that embed (ingest, reembed, eval).
ChunkTokens = Annotated[Optional[int], typer.Option(help="Max tokens per chunk [256]")]
Overlap = Annotated[Optional[int], typer.Option(help="Tokens shared by neighbouring chunks [32]")]
Headings = Annotated[Optional[bool], typer.Option(
    "--headings/--no-headings", help="Also embed each heading on its own, standing for its section [on]")]
InstructionName = Annotated[Optional[str], typer.Option(help="auto, qwen3, e5, input-type or none")]
QueryTask = Annotated[Optional[str], typer.Option(help="Qwen3 query instruction task")]
Dimensions = Annotated[Optional[int], typer.Option(help="Matryoshka output dimension")]
Tokenizer = Annotated[Optional[str], typer.Option(help="qwen3, e5, usem3, server, or a tokenizer.json path")]
PdfPassword = Annotated[Optional[str], typer.Option(help="Password for encrypted PDFs")]
ReportJson = Annotated[bool, typer.Option("--json", help="Print the report as JSON on stdout")]
# How search ranks: shared by search and eval.
Mode = Annotated[Optional[str], typer.Option(
    "--mode", help="dense (vectors alone) or hybrid (vectors and BM25, fused by reciprocal rank) [KB_SEARCH_MODE]")]
Rerank = Annotated[Optional[bool], typer.Option(
    "--rerank/--no-rerank", help="Reorder the best passages with the reranker at --rerank-endpoint [KB_RERANK]")]
RerankEndpoint = Annotated[Optional[str], typer.Option(
    help="Rerank API base URL (vLLM, SGLang, Cohere/Jina style) [KB_RERANK_ENDPOINT]")]
RerankModel = Annotated[Optional[str], typer.Option(help="Served reranker name [KB_RERANK_MODEL]")]
RerankApi = Annotated[Optional[str], typer.Option(
    help="rerank: POST /rerank (vLLM, SGLang, Cohere, Jina); score: vLLM's POST /score [KB_RERANK_API]")]


def _settings(**flags: Any) -> Settings:
    config = flags.pop("config", None)
    return load_settings(config, **flags)


def _fail(message: str, code: int = 2) -> None:
    err.print(f"[bold red]error:[/] {escape(message)}")
    raise typer.Exit(code)


def _display(source: str) -> str:
    try:
        return str(Path(source).relative_to(Path.cwd()))
    except ValueError:
        return source


class _Rate(ProgressColumn):
    """Tokens per second over the run so far."""

    def render(self, task) -> Text:  # noqa: ANN001
        elapsed = task.elapsed or 0
        tokens = task.fields.get("tokens", 0)
        rate = tokens / elapsed if elapsed > 0 else 0
        return Text(f"{rate:,.0f} tok/s", style="cyan")


class RichProgress:
    """Files, chunks, tokens/s and ETA (by bytes of the files left) on stderr."""

    def __init__(self, console: Console) -> None:
        self.bar = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            TextColumn("{task.fields[files]} files"),
            TextColumn("{task.fields[chunks]} chunks"),
            _Rate(),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            console=console,
            transient=False,
        )
        self.task = None
        self.files = self.files_total = self.chunks = self.planned_chunks = self.tokens = 0

    def __enter__(self) -> RichProgress:
        self.bar.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.bar.stop()

    def _update(self, advance: int = 0) -> None:
        if self.task is not None:
            self.bar.update(
                self.task,
                advance=advance,
                files=f"{self.files}/{self.files_total}",
                chunks=f"{self.chunks}/{self.planned_chunks}",
                tokens=self.tokens,
            )

    def start(self, files: int, total_bytes: int) -> None:
        # A new run (kb eval --vary ingests once per variant): counts start again.
        self.files = self.chunks = self.planned_chunks = self.tokens = 0
        if self.task is not None:
            self.bar.remove_task(self.task)
        self.files_total = files
        self.task = self.bar.add_task("ingest", total=max(total_bytes, 1), files="", chunks="", tokens=0)
        self._update()

    def planned(self, chunks: int, tokens: int) -> None:
        self.planned_chunks += chunks
        self._update()

    def embedded(self, chunks: int, tokens: int) -> None:
        self.chunks += chunks
        self.tokens += tokens
        self._update()

    def file_progress(self, source: str, done: int, total: int) -> None:
        pass  # one bar for the run is enough on a terminal

    def file_done(self, outcome: FileOutcome, size: int) -> None:
        self.files += 1
        self._update(size)
        if outcome.status == "failed":
            self.bar.console.print(f"[red]failed[/] {escape(_display(outcome.source))}: {escape(outcome.reason)}")

    def waiting(self, message: str) -> None:
        self.bar.console.print(f"[yellow]{escape(message)}[/]")


def _summary(report: IngestReport) -> None:
    failed, warned = report.of("failed"), [o for o in report.outcomes if o.warnings]
    chunks_per_s = report.chunks / report.seconds if report.seconds else 0
    shard = f" shard {report.shard} ({report.other_shards} files left to the other shards)" if report.shard else ""
    err.print(
        f"[bold]{report.collection}[/]{shard} ({escape(report.model)}): "
        f"[green]{len(report.of('ingested'))} ingested[/], {len(report.of('unchanged'))} unchanged, "
        + (f"{len(report.of('pruned'))} pruned, " if report.of("pruned") else "")
        + f"[{'red' if failed else 'green'}]{len(failed)} failed[/]; "
        f"{report.chunks} chunks, {report.tokens:,} tokens in {report.seconds:.1f} s "
        f"({chunks_per_s:.1f} chunks/s); {report.stats.requests} requests, {report.stats.retries} retries"
        + "".join(f"; {escape(url)}: up to {limit['peak']} in flight" for url, limit in report.stats.in_flight.items()
                  if report.stats.requests)
    )
    if failed or warned:
        table = Table("file", "outcome", "reason", box=None, show_header=True, header_style="bold")
        for outcome in failed:
            table.add_row(escape(_display(outcome.source)), "[red]failed[/]", escape(outcome.reason))
        for outcome in warned:
            if outcome.status != "failed":
                table.add_row(escape(_display(outcome.source)), f"[yellow]{outcome.status}[/]", escape("; ".join(outcome.warnings)))
        err.print(table)


@app.command("ingest")
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
    batch_inputs: Annotated[Optional[int], typer.Option(help="Max inputs per request [32]")] = None,
    batch_tokens: Annotated[Optional[int], typer.Option(help="Max tokens per request [16384]")] = None,
    in_flight: Annotated[Optional[int], typer.Option(
        help="Requests in flight per endpoint; 0 learns it from the server's latency [0]")] = None,
    max_in_flight: Annotated[Optional[int], typer.Option(help="Most requests in flight per endpoint [32]")] = None,
    workers: Annotated[Optional[int], typer.Option(help="Parsing processes (0: auto) [0]")] = None,
    pdf_password: PdfPassword = None,
    lock_wait: Annotated[Optional[float], typer.Option(
        help="Seconds to wait while another process writes to the same embedded store [600]")] = None,
    as_json: ReportJson = False,
    config: Config = None,
) -> None:
    """Ingest files and folders into a knowledge base (unchanged files are skipped)."""
    try:
        settings = _settings(
            collection=collection, endpoint=endpoint, model=model, chunk_tokens=chunk_tokens, overlap=overlap, headings=headings,
            chroma_path=chroma_path, chroma_url=chroma_url,
            chroma_tenant=chroma_tenant, chroma_database=chroma_database, include=include, exclude=exclude,
            instruction=instruction, query_task=query_task, dimensions=dimensions, tokenizer=tokenizer,
            batch_inputs=batch_inputs, batch_tokens=batch_tokens, in_flight=in_flight, max_in_flight=max_in_flight,
            workers=workers, lock_wait=lock_wait, shard=shard, config=config,
        )
        with RichProgress(err) as progress:
            report = ingest(paths, settings, prune=prune, progress=progress, pdf_password=pdf_password)
    except KbError as exc:
        _fail(str(exc))
        return
    except KeyboardInterrupt:
        err.print("[yellow]interrupted[/]: files already stored are kept; run the same command again to resume")
        raise typer.Exit(130) from None
    _summary(report)
    if as_json:
        out.print_json(json.dumps(report.to_dict(), ensure_ascii=False))
    raise typer.Exit(0 if report.ok else 1)


@app.command("reembed")
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
    pdf_password: PdfPassword = None,
    as_json: ReportJson = False,
    config: Config = None,
) -> None:
    """Re-embed a collection's documents with another model into a new collection (the old one is kept)."""
    try:
        base = _settings(collection=collection, chroma_path=chroma_path, chroma_url=chroma_url,
                         chroma_tenant=chroma_tenant, chroma_database=chroma_database, config=config)
        target = _settings(collection=to, endpoint=endpoint, model=model, dimensions=dimensions, tokenizer=tokenizer,
                           instruction=instruction, chunk_tokens=chunk_tokens, overlap=overlap, headings=headings,
                           chroma_path=chroma_path, chroma_url=chroma_url,
                           chroma_tenant=chroma_tenant, chroma_database=chroma_database, config=config)
        with RichProgress(err) as progress:
            report = reembed(base, target, progress=progress, pdf_password=pdf_password)
    except KbError as exc:
        _fail(str(exc))
        return
    _summary(report)
    if report.ok:
        err.print(f"{escape(base.collection)} is unchanged; search the new one with --collection {escape(to)}")
    if as_json:
        out.print_json(json.dumps(report.to_dict(), ensure_ascii=False))
    raise typer.Exit(0 if report.ok else 1)


@app.command("search")
def search_command(
    query: Annotated[str, typer.Argument(help="A question in any language")],
    k: Annotated[int, typer.Option("-k", "--top-k", help="Number of results", min=1)] = 5,
    collection: Collection = None,
    where: Annotated[Optional[str], typer.Option(help='Chroma metadata filter, e.g. {"file_type": "pdf"}')] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print results as JSON on stdout")] = False,
    mode: Mode = None,
    rerank: Rerank = None,
    rerank_endpoint: RerankEndpoint = None,
    rerank_model: RerankModel = None,
    rerank_api: RerankApi = None,
    endpoint: Endpoint = None,
    model: Model = None,
    chroma_path: ChromaPath = None,
    chroma_url: ChromaUrl = None,
    chroma_tenant: ChromaTenant = None,
    chroma_database: ChromaDatabase = None,
    config: Config = None,
) -> None:
    """Search a knowledge base: ranked passages with score, source and page, and each stage's scores."""
    from kb_app.search import Searcher

    try:
        settings = _settings(
            collection=collection, endpoint=endpoint, model=model, chroma_path=chroma_path, chroma_url=chroma_url,
            chroma_tenant=chroma_tenant, chroma_database=chroma_database, config=config, search_mode=mode,
            rerank=rerank, rerank_endpoint=rerank_endpoint, rerank_model=rerank_model, rerank_api=rerank_api,
        )
        started = time.perf_counter()
        response = Searcher(settings).search(query, k, parse_where(where))
        total = time.perf_counter() - started
    except KbError as exc:
        _fail(str(exc))
        return
    if as_json:
        sys.stdout.write(json.dumps([r.to_dict() for r in response.results], ensure_ascii=False, indent=2) + "\n")
        return
    if not response.results:
        err.print("no results: the collection is empty or the filter matches nothing")
        return
    for result in response.results:
        where_from = _display(result.source) + (f" p.{result.page}" if result.page else "")
        snippet = " ".join(result.text.split())
        snippet = snippet[:300] + ("…" if len(snippet) > 300 else "")
        matched = f"  [dim](heading: {escape(result.heading)})[/]" if result.heading else ""
        out.print(f"[bold]{result.rank}.[/] [cyan]{result.score:.3f}[/]  [green]{escape(where_from)}[/]{matched}")
        if response.mode != "dense":
            out.print(f"   [dim]{escape(result.stages())}[/]", highlight=False)
        out.print(f"   {escape(snippet)}", highlight=False)
    err.print(f"[dim]{len(response.results)} results in {response.seconds * 1000:.0f} ms "
              f"({response.mode}: {response.timing_summary()}) / {total * 1000:.0f} ms (with setup)[/]")


@app.command("status")
def status_command(
    as_json: Annotated[bool, typer.Option("--json", help="Print as JSON on stdout")] = False,
    chroma_path: ChromaPath = None,
    chroma_url: ChromaUrl = None,
    chroma_tenant: ChromaTenant = None,
    chroma_database: ChromaDatabase = None,
    config: Config = None,
) -> None:
    """Knowledge bases in the store: documents, chunks, model, dimension, chunking."""
    try:
        settings = _settings(chroma_path=chroma_path, chroma_url=chroma_url,
                             chroma_tenant=chroma_tenant, chroma_database=chroma_database, config=config)
        rows = status(settings)
    except KbError as exc:
        _fail(str(exc))
        return
    if as_json:
        sys.stdout.write(json.dumps(rows, ensure_ascii=False, indent=2) + "\n")
        return
    if not rows:
        err.print(f"no knowledge bases in {settings.chroma_url or settings.chroma_path}: run kb ingest PATH")
        return
    table = Table("collection", "documents", "chunks", "tokens", "model", "dim", "instruction", "chunking", "last ingest")
    for row in rows:
        table.add_row(
            row["collection"], str(row["documents"]), str(row["chunks"]), f"{row['tokens']:,}",
            str(row.get("model")), str(row.get("dimension", "")), str(row.get("instruction", "")),
            f"{row.get('chunk_tokens')} tok / {row.get('overlap')} overlap ({row.get('tokenizer')})",
            str(row.get("last_ingest") or ""),
        )
    out.print(table)


@app.command("delete")
def delete_command(
    sources: Annotated[list[str], typer.Argument(
        help="Documents as kb status and search name them (relative or absolute paths), or folders: all below")],
    collection: Collection = None,
    chroma_path: ChromaPath = None,
    chroma_url: ChromaUrl = None,
    chroma_tenant: ChromaTenant = None,
    chroma_database: ChromaDatabase = None,
    config: Config = None,
) -> None:
    """Remove documents and their passages from a knowledge base (the files themselves are left alone)."""
    try:
        settings = _settings(collection=collection, chroma_path=chroma_path, chroma_url=chroma_url,
                             chroma_tenant=chroma_tenant, chroma_database=chroma_database, config=config)
        removed, unknown = delete_documents(settings, sources)
    except KbError as exc:
        _fail(str(exc))
        return
    for source, chunks in removed.items():
        err.print(f"deleted {escape(_display(source))} ({chunks} passages)")
    for source in unknown:
        err.print(f"[red]failed[/] {escape(source)}: no document in {settings.collection!r} is recorded under this path")
    raise typer.Exit(1 if unknown else 0)


@app.command("bench")
def bench_command(
    paths: Annotated[Optional[list[Path]], typer.Argument(help="Corpus: files or folders")] = None,
    corpus: Annotated[Optional[str], typer.Option(
        help="A real corpus fetched from Debian's archive into ~/.cache/kb/bench: docs, python-library, pdf or large")] = None,
    compare: Annotated[bool, typer.Option(
        "--compare", help="kb vs a LangChain pipeline and the deployment-guide recipe, same simulated server")] = False,
    repeat: Annotated[int, typer.Option(help="With --compare: rounds, order rotated, medians reported", min=1)] = 1,
    pdf_pages: Annotated[bool, typer.Option(
        "--pdf-pages", help="Pages/s parsing the PDFs through kb's loader, with 1 and 2 processes (or --workers)")] = False,
    simulated_endpoints: Annotated[Optional[str], typer.Option(
        help="Compare endpoint counts side by side, e.g. 1,4: that many simulated servers, one run each")] = None,
    speed: Annotated[float, typer.Option(help="Multiply each simulated GPU's speed (e.g. 0.25)", min=0.01)] = 1.0,
    endpoint: Annotated[Optional[str], typer.Option(help="A real server to measure instead of the simulator")] = None,
    model: Model = None,
    model_size: Annotated[str, typer.Option(help="Simulated Qwen3-Embedding size: 0.6b, 4b or 8b")] = "4b",
    dim: Annotated[Optional[int], typer.Option(help="Simulated vector dimension (default: the model's)")] = None,
    batch_inputs: Annotated[Optional[int], typer.Option(help="Max inputs per request [32]")] = None,
    batch_tokens: Annotated[Optional[int], typer.Option(help="Max tokens per request [16384]")] = None,
    max_in_flight: Annotated[Optional[int], typer.Option(help="Requests in flight per endpoint [8]")] = None,
    workers: Annotated[Optional[int], typer.Option(help="Parsing processes (0: auto) [0]")] = None,
    chroma_server: Annotated[bool, typer.Option(
        "--chroma-server", help="Store into a `chroma run` server started for the run (its memory shown apart)")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON on stdout")] = False,
) -> None:
    """Measure ingestion throughput against a simulated GPU server (or a real one), into a scratch store."""
    from bench.run import run_bench

    if model_size not in ("0.6b", "4b", "8b"):
        _fail("--model-size must be 0.6b, 4b or 8b")
    if endpoint and not model:
        _fail("with --endpoint, name the served model with --model")
    if sum(map(bool, (compare, pdf_pages, simulated_endpoints))) > 1:
        _fail("--compare, --pdf-pages and --simulated-endpoints are separate benchmarks: pick one")
    counts: list[int] = []
    if simulated_endpoints:
        try:
            counts = [int(c) for c in simulated_endpoints.split(",")]
        except ValueError:
            counts = []
        if not counts or min(counts) < 1 or endpoint:
            _fail("--simulated-endpoints takes counts like 1,4 (and no --endpoint)")
    paths = list(paths or [])
    if corpus:
        from bench.corpus import CorpusError, fetch

        try:
            with err.status(f"fetching corpus {corpus} (apt-get download, once)"):
                paths += fetch(corpus)
        except CorpusError as exc:
            _fail(str(exc))
    if not paths:
        _fail("give corpus paths, or --corpus docs|python-library|pdf|large")
    if pdf_pages:
        _bench_pdf_pages(paths, [workers] if workers else [1, 2], as_json)
        return
    if counts:
        _bench_endpoints(paths, counts, model_size, speed, dim, workers, as_json)
        return
    if compare:
        if endpoint or batch_inputs or batch_tokens or max_in_flight or workers is not None:
            _fail("--compare runs every pipeline with its defaults against the simulated server")
        _bench_compare(paths, corpus, repeat, model_size, dim, as_json)
        return
    flags = {k: v for k, v in {"batch_inputs": batch_inputs, "batch_tokens": batch_tokens,
                               "max_in_flight": max_in_flight, "workers": workers}.items() if v is not None}
    try:
        with RichProgress(err) as progress:
            result = run_bench(paths, endpoint=endpoint, model=model, model_size=model_size, dim=dim,
                               progress=progress, chroma_server=chroma_server, **flags)
    except KbError as exc:
        _fail(str(exc))
        return
    if as_json:
        sys.stdout.write(json.dumps(result.to_dict(), indent=2) + "\n")
    else:
        table = Table("measure", "value", box=None)
        table.add_row("files (failed)", f"{result.files} ({result.failed}), {result.corpus_bytes / 1e6:,.1f} MB read")
        table.add_row("chunks / tokens", f"{result.chunks:,} / {result.tokens:,}")
        table.add_row("wall time", f"{result.seconds:.1f} s")
        table.add_row("end to end", f"{result.tokens_per_s:,} tokens/s, {result.chunks_per_s} chunks/s")
        table.add_row("requests / retries", f"{result.requests} / {result.retries}")
        if result.server:
            table.add_row("simulated server", f"{result.server['model']}, capacity {result.server['capacity_tokens_per_s']:,} tokens/s")
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
        out.print(table)
    raise typer.Exit(0 if not result.failed else 1)


def _bench_compare(paths: list[Path], corpus: str | None, repeat: int, model_size: str, dim: int | None,
                   as_json: bool) -> None:
    from bench.baselines import BenchmarkInvalid, compare, stage_table, table

    def ran(r) -> None:  # noqa: ANN001
        err.print(f"{r.pipeline} (round {r.round}): {r.chunks:,} chunks = vectors, {r.tokens:,} tokens served, "
                  f"{r.seconds:.1f} s, {r.share_of_capacity:.1%} of capacity")

    try:
        with err.status("kb, langchain and recipe, one after another (each in its own process)"):
            result = compare(paths, repeat=repeat, model_size=model_size, dim=dim, corpus_name=corpus, on_run=ran)
    except BenchmarkInvalid as exc:
        _fail(f"invalid benchmark: {exc}")
        return
    if as_json:
        sys.stdout.write(json.dumps(result.to_dict(), indent=2) + "\n")
        return
    out.print(table(result))
    out.print(stage_table(result))
    for name, ratio in result.ratios.items():
        out.print(f"{name}: [bold]{ratio:.2f}x[/]")


def _bench_endpoints(paths: list[Path], counts: list[int], model_size: str, speed: float, dim: int | None,
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


def _bench_pdf_pages(paths: list[Path], workers: list[int], as_json: bool) -> None:

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


@app.command("eval")
def eval_command(
    path: Annotated[Path, typer.Argument(help="A BEIR-layout set: corpus.jsonl, queries.jsonl, qrels/<split>.tsv; "
                                              "with --targets, the folder of documents the queries come from")],
    targets: Annotated[Optional[Path], typer.Option(
        help="Parallel documents: the same files as PATH's, in another language; each file of PATH asks for its "
             "namesake here by its title and its first paragraph")] = None,
    split: Annotated[str, typer.Option(help="Which judgements: qrels/<split>.tsv")] = "test",
    collection: Annotated[Optional[str], typer.Option(
        "--collection", "-c", help="Collection to fill and search [eval-<set name>]")] = None,
    ingest_corpus: Annotated[bool, typer.Option(
        "--ingest/--no-ingest", help="Ingest the corpus first (unchanged documents are skipped)")] = True,
    work: Annotated[Path, typer.Option(help="Where the corpus is written as files")] = Path.home() / ".cache" / "kb" / "eval",
    per_query: Annotated[Optional[Path], typer.Option(help="Write each query's results here (JSON lines)")] = None,
    plot: Annotated[Optional[Path], typer.Option(help="Save recall@k against k as a PNG (a line per variant)")] = None,
    vary: Annotated[Optional[list[str]], typer.Option(
        help="A variant to score beside the base settings, e.g. 'chunk_tokens=256;overlap=32' (repeatable)")] = None,
    endpoint: Endpoint = None,
    model: Model = None,
    chunk_tokens: ChunkTokens = None,
    overlap: Overlap = None,
    headings: Headings = None,
    instruction: InstructionName = None,
    query_task: QueryTask = None,
    dimensions: Dimensions = None,
    tokenizer: Tokenizer = None,
    mode: Mode = None,
    rerank: Rerank = None,
    rerank_endpoint: RerankEndpoint = None,
    rerank_model: RerankModel = None,
    rerank_api: RerankApi = None,
    chroma_path: ChromaPath = None,
    chroma_url: ChromaUrl = None,
    chroma_tenant: ChromaTenant = None,
    chroma_database: ChromaDatabase = None,
    as_json: ReportJson = False,
    config: Config = None,
) -> None:
    """Score retrieval on a judged query set: nDCG@10, Recall@1/5/10/100, MRR@10, and search latency."""
    from kb_app.evaluate import compare, evaluate, load_beir, parallel_set, parse_variant, plot_recall

    try:
        evalset = parallel_set(path, targets) if targets else load_beir(path, split)
        for reason in evalset.skipped:
            err.print(f"[yellow]not asked:[/] {escape(reason)}")
        settings = _settings(
            collection=collection or f"eval-{evalset.name}", endpoint=endpoint, model=model,
            chunk_tokens=chunk_tokens, overlap=overlap, headings=headings, instruction=instruction, query_task=query_task,
            dimensions=dimensions, tokenizer=tokenizer, chroma_path=chroma_path, chroma_url=chroma_url,
            chroma_tenant=chroma_tenant, chroma_database=chroma_database, config=config,
            search_mode=mode, rerank=rerank, rerank_endpoint=rerank_endpoint, rerank_model=rerank_model,
            rerank_api=rerank_api,
        )
        variants = [parse_variant(v) for v in vary or []]
        with RichProgress(err) as progress:
            if variants:
                runs = compare(evalset, settings, variants, work, ingest_corpus=ingest_corpus, progress=progress)
            else:
                report = evaluate(evalset, settings, work, ingest_corpus=ingest_corpus, progress=progress)
                runs = [("base", report)]
        if plot:
            err.print(f"recall@k plot: {plot_recall(runs, plot)}")
    except KbError as exc:
        _fail(str(exc))
        return
    if variants:
        _print_comparison(runs, as_json)
        return
    if per_query:
        with per_query.open("w", encoding="utf-8") as handle:
            for result in report.per_query:
                handle.write(json.dumps(asdict(result), ensure_ascii=False) + "\n")
    if as_json:
        sys.stdout.write(json.dumps(report.to_dict(), ensure_ascii=False, indent=2) + "\n")
        return
    table = Table("score", "all queries", *[f"{kind} queries" for kind in report.by_kind],
                  title=f"{report.set}: {report.queries} queries, {report.documents} documents, "
                        f"collection {report.collection} ({report.model})")
    for name, value in report.scores.items():
        number = (lambda v: str(v)) if name == "queries" else (lambda v: f"{v:.4f}")
        table.add_row(name, number(value), *[number(kind[name]) for kind in report.by_kind.values()])
    table.add_row("seconds per query", f"{report.seconds_per_query:.4f}")
    if report.latency_ms:
        table.add_row(f"search ms p50 / p95 ({report.mode}, k=10)",
                      f"{report.latency_ms['p50']:.1f} / {report.latency_ms['p95']:.1f}")
    out.print(table)


def _print_comparison(runs: list, as_json: bool) -> None:
    if as_json:
        sys.stdout.write(json.dumps([{"variant": label, **report.to_dict()} for label, report in runs],
                                    ensure_ascii=False, indent=2) + "\n")
        return
    first = runs[0][1]
    names = [name for name in first.scores if name != "queries"]
    table = Table("variant", "collection", "mode", *names, "search ms p50", "p95",
                  title=f"{first.set}: {first.queries} queries, {first.documents} documents")
    for label, report in runs:
        latency = report.latency_ms
        table.add_row(label, report.collection, report.mode, *[f"{report.scores[n]:.4f}" for n in names],
                      f"{latency.get('p50', 0):.1f}", f"{latency.get('p95', 0):.1f}")
    out.print(table)


@app.command("ui")
def ui_command(
    port: Annotated[int, typer.Option(help="Port to listen on")] = 8501,
    host: Annotated[str, typer.Option(help="Address to listen on (127.0.0.1: this machine only)")] = "127.0.0.1",
    collection: Collection = None,
    endpoint: Endpoint = None,
    model: Model = None,
    chroma_path: ChromaPath = None,
    chroma_url: ChromaUrl = None,
    chroma_tenant: ChromaTenant = None,
    chroma_database: ChromaDatabase = None,
    config: Config = None,
) -> None:
    """Start the browser UI (Streamlit): search, upload, library, settings."""
    import os

    try:
        settings = _settings(collection=collection, endpoint=endpoint, model=model, chroma_path=chroma_path,
                             chroma_url=chroma_url, chroma_tenant=chroma_tenant, chroma_database=chroma_database,
                             config=config)
    except KbError as exc:
        _fail(str(exc))
        return
    # The app reads the same settings from the environment.
    env = dict(os.environ)
    if config:
        env["KB_CONFIG"] = str(config)
    for name, value in (("COLLECTION", collection), ("MODEL", model), ("CHROMA_PATH", chroma_path), ("CHROMA_URL", chroma_url)):
        if value is not None:
            env[f"KB_{name}"] = str(value)
    if endpoint:
        env["KB_ENDPOINT"] = ",".join(endpoint)
    script = Path(__file__).with_name("app.py")
    command = [
        sys.executable, "-m", "streamlit", "run", str(script),
        "--server.address", host, "--server.port", str(port), "--server.headless", "true",
        "--browser.gatherUsageStats", "false", "--server.maxUploadSize", str(settings.max_upload_mb),
        "--client.toolbarMode", "minimal",
    ]
    err.print(f"kb UI on http://{host}:{port} (collection {settings.collection}); Ctrl-C to stop")
    if host not in ("127.0.0.1", "localhost", "::1"):
        if settings.ui_password is None:
            err.print(f"[bold yellow]warning:[/] listening on {escape(host)} with no password: anyone who can reach "
                      "this address can search, upload and delete. Set KB_UI_PASSWORD.")
        else:
            err.print("[yellow]note:[/] the password travels in clear over http: put a TLS proxy in front "
                      "for use beyond a trusted network")
    sys.stderr.flush()
    # Streamlit takes this process's place: a signal that stops `kb ui` stops the server, not just its parent.
    os.execve(sys.executable, command, env)


def main() -> None:
    """Entry point: kb errors were already reported; anything else still ends with a message, not a traceback."""
    import os

    try:
        app()
    except Exception as exc:
        if os.environ.get("KB_DEBUG"):
            raise
        err.print(f"[bold red]internal error:[/] {escape(type(exc).__name__)}: {escape(str(exc))} "
                  "(set KB_DEBUG=1 for a traceback)")
        sys.exit(2)


if __name__ == "__main__":
    main()
