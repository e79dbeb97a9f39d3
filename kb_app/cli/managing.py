"""`kb status` and `kb delete`: what the store holds, and taking documents out of it."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from ingest.manage import delete_documents, status
from ingest.settings import load_settings
from kb_app.cli.options import AsJson, ChromaDatabase, ChromaPath, ChromaTenant, ChromaUrl, Collection, Config
from kb_app.cli.output import display, err, out, print_json


def status_command(
    as_json: AsJson = False,
    chroma_path: ChromaPath = None,
    chroma_url: ChromaUrl = None,
    chroma_tenant: ChromaTenant = None,
    chroma_database: ChromaDatabase = None,
    config: Config = None,
) -> None:
    """Knowledge bases in the store: documents, chunks, model, dimension, chunking."""
    settings = load_settings(config, chroma_path=chroma_path, chroma_url=chroma_url, chroma_tenant=chroma_tenant,
                             chroma_database=chroma_database)
    rows = status(settings)
    if as_json:
        print_json(rows)
        return
    if not rows:
        err.print(f"no knowledge bases in {settings.chroma_url or settings.chroma_path}: run kb ingest PATH")
        return
    table = Table("collection", "documents", "chunks", "tokens", "model", "dim", "instruction", "chunking",
                  "last ingest")
    for row in rows:
        table.add_row(
            row["collection"], str(row["documents"]), str(row["chunks"]), f"{row['tokens']:,}",
            str(row.get("model")), str(row.get("dimension", "")), str(row.get("instruction", "")),
            f"{row.get('chunk_tokens')} tok / {row.get('overlap')} overlap ({row.get('tokenizer')})",
            str(row.get("last_ingest") or ""),
        )
    out.print(table)


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
    settings = load_settings(config, collection=collection, chroma_path=chroma_path, chroma_url=chroma_url,
                             chroma_tenant=chroma_tenant, chroma_database=chroma_database)
    removed, unknown = delete_documents(settings, sources)
    for source, chunks in removed.items():
        err.print(f"deleted {escape(display(source))} ({chunks} passages)")
    for source in unknown:
        err.print(f"[red]failed[/] {escape(source)}: no document in {settings.collection!r} is recorded "
                  "under this path")
    raise typer.Exit(1 if unknown else 0)
