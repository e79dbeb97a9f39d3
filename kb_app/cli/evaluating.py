"""`kb eval`: retrieval scored on a judged query set, for the settings given and for variants of them."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer
from rich.markup import escape
from rich.table import Table

from ingest.settings import load_settings
from kb_app.cli.options import (
    AsJson,
    ChromaDatabase,
    ChromaPath,
    ChromaTenant,
    ChromaUrl,
    ChunkTokens,
    Config,
    Dimensions,
    Endpoint,
    Headings,
    InstructionName,
    Mode,
    Model,
    Overlap,
    QueryTask,
    Rerank,
    RerankApi,
    RerankEndpoint,
    RerankModel,
    Tokenizer,
)
from kb_app.cli.output import err, out, print_json
from kb_app.cli.progress import RichProgress

if TYPE_CHECKING:
    from kb_app.evaluate import EvalReport



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
    work: Annotated[Optional[Path], typer.Option(
        help="Where the corpus is written as files [~/.cache/kb/eval]")] = None,
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
    as_json: AsJson = False,
    config: Config = None,
) -> None:
    """Score retrieval on a judged query set: nDCG@10, Recall@1/5/10/100, MRR@10, and search latency."""
    from kb_app.evaluate import EVAL_WORK, compare, evaluate, load_beir, parallel_set, parse_variant, plot_recall

    work = work or EVAL_WORK
    chosen = load_settings(config)  # the files ingest will take (KB_INCLUDE, KB_EXCLUDE) are the documents
    evalset = parallel_set(path, targets, chosen.include, chosen.exclude) if targets else load_beir(path, split)
    for reason in evalset.skipped:
        err.print(f"[yellow]not asked:[/] {escape(reason)}")
    settings = load_settings(
        config, collection=collection or f"eval-{evalset.name}", endpoint=endpoint, model=model,
        chunk_tokens=chunk_tokens, overlap=overlap, headings=headings, instruction=instruction, query_task=query_task,
        dimensions=dimensions, tokenizer=tokenizer, chroma_path=chroma_path, chroma_url=chroma_url,
        chroma_tenant=chroma_tenant, chroma_database=chroma_database, search_mode=mode, rerank=rerank,
        rerank_endpoint=rerank_endpoint, rerank_model=rerank_model, rerank_api=rerank_api,
    )
    variants = [parse_variant(v) for v in vary or []]
    with RichProgress(err) as progress:
        if variants:
            runs = compare(evalset, settings, variants, work, ingest_corpus=ingest_corpus, progress=progress)
        else:
            runs = [("base", evaluate(evalset, settings, work, ingest_corpus=ingest_corpus, progress=progress))]
    if plot:
        err.print(f"recall@k plot: {plot_recall(runs, plot)}")
    if variants:
        _print_comparison(runs, as_json)
    else:
        _print_report(runs[0][1], per_query, as_json)


def _print_report(report: EvalReport, per_query: Path | None, as_json: bool) -> None:
    if per_query:
        with per_query.open("w", encoding="utf-8") as handle:
            for result in report.per_query:
                handle.write(json.dumps(asdict(result), ensure_ascii=False) + "\n")
    if as_json:
        print_json(report.to_dict())
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


def _print_comparison(runs: list[tuple[str, EvalReport]], as_json: bool) -> None:
    if as_json:
        print_json([{"variant": label, **report.to_dict()} for label, report in runs])
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
