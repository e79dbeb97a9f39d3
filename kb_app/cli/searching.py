"""`kb search`: ranked passages for a question, with where each comes from and each stage's scores."""

from __future__ import annotations

import time
from typing import Annotated, Optional

import typer
from rich.markup import escape

from ingest.settings import load_settings
from kb_app.cli.options import (
    AsJson,
    ChromaDatabase,
    ChromaPath,
    ChromaTenant,
    ChromaUrl,
    Collection,
    Config,
    Endpoint,
    Mode,
    Model,
    Rerank,
    RerankApi,
    RerankEndpoint,
    RerankModel,
)
from kb_app.cli.output import display, err, out, print_json, snippet

SNIPPET = 300  # characters of each passage shown


def search_command(
    query: Annotated[str, typer.Argument(help="A question in any language")],
    k: Annotated[int, typer.Option("-k", "--top-k", help="Number of results", min=1)] = 5,
    collection: Collection = None,
    where: Annotated[Optional[str], typer.Option(help='Chroma metadata filter, e.g. {"file_type": "pdf"}')] = None,
    as_json: AsJson = False,
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
    from kb_app.search import Searcher, parse_where

    settings = load_settings(
        config, collection=collection, endpoint=endpoint, model=model, chroma_path=chroma_path,
        chroma_url=chroma_url, chroma_tenant=chroma_tenant, chroma_database=chroma_database, search_mode=mode,
        rerank=rerank, rerank_endpoint=rerank_endpoint, rerank_model=rerank_model, rerank_api=rerank_api,
    )
    started = time.perf_counter()
    response = Searcher(settings).search(query, k, parse_where(where))
    total = time.perf_counter() - started
    if as_json:
        print_json([r.to_dict() for r in response.results])
        return
    if not response.results:
        err.print("no results: the collection is empty or the filter matches nothing")
        return
    for result in response.results:
        where_from = display(result.source) + (f", {result.location}" if result.location else "")
        matched = f"  [dim](heading: {escape(result.heading)})[/]" if result.heading else ""
        matched += "  [dim](read by OCR)[/]" if result.ocr else ""
        out.print(f"[bold]{result.rank}.[/] [cyan]{result.score:.3f}[/]  [green]{escape(where_from)}[/]{matched}")
        if response.mode != "dense":
            out.print(f"   [dim]{escape(result.stages())}[/]", highlight=False)
        out.print(f"   {escape(snippet(result.text, SNIPPET))}", highlight=False)
    err.print(f"[dim]{len(response.results)} results in {response.seconds * 1000:.0f} ms "
              f"({response.mode}: {response.timing_summary()}) / {total * 1000:.0f} ms (with setup)[/]")
