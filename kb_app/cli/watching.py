"""`kb watch`: keep a knowledge base in step with folders while their files change."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated, Callable, Optional

import typer
from rich.markup import escape

from ingest.settings import load_settings
from ingest.watch import FolderSync, SyncRound
from kb_app.cli.options import (
    ChromaDatabase,
    ChromaPath,
    ChromaTenant,
    ChromaUrl,
    Collection,
    Config,
    Endpoint,
    Model,
    Ocr,
)
from kb_app.cli.output import err
from kb_app.cli.progress import file_line, print_summary


def _printer(paths: list[Path]) -> Callable[[SyncRound], None]:
    """What each round prints: its files by name (after the catch-up), then kb ingest's summary."""
    folders = ", ".join(escape(str(p)) for p in paths)

    def show(sync: SyncRound) -> None:
        report = sync.report
        if not sync.catch_up:  # a catch-up's files can be thousands: its summary says how many
            for outcome in report.outcomes:
                if outcome.status == "ingested":
                    file_line(err, outcome, "green", f"{outcome.chunks} chunks")
                elif outcome.status == "pruned":
                    file_line(err, outcome, "yellow", f"file gone, its {outcome.chunks} chunks removed")
        print_summary(report)
        if sync.catch_up:
            err.print(f"watching {folders} for changes (Ctrl-C to stop)")

    return show


def watch_command(
    paths: Annotated[list[Path], typer.Argument(help="Folders to keep in sync (walked recursively)")],
    collection: Collection = None,
    endpoint: Endpoint = None,
    model: Model = None,
    chroma_path: ChromaPath = None,
    chroma_url: ChromaUrl = None,
    chroma_tenant: ChromaTenant = None,
    chroma_database: ChromaDatabase = None,
    include: Annotated[Optional[list[str]], typer.Option(help="Only files matching this glob (repeatable)")] = None,
    exclude: Annotated[Optional[list[str]], typer.Option(help="Skip files matching this glob (repeatable)")] = None,
    ocr: Ocr = None,
    debounce: Annotated[int, typer.Option(
        help="Milliseconds of quiet after a change before its round starts (a burst of saves is one round)")] = 500,
    settle: Annotated[int, typer.Option(
        help="Milliseconds a file's size and time must stand still before it is read (a copy in progress)")] = 1000,
    config: Config = None,
) -> None:
    """Keep a knowledge base in step with folders: catch up, then ingest new and changed files and remove
    deleted ones as they happen, until Ctrl-C. Documents of other folders are left alone."""
    settings = load_settings(
        config, collection=collection, endpoint=endpoint, model=model, chroma_path=chroma_path,
        chroma_url=chroma_url, chroma_tenant=chroma_tenant, chroma_database=chroma_database, include=include,
        exclude=exclude, ocr=ocr,
    )
    # The printer names every file; the module's log lines would say it twice (a server logs them instead).
    logging.getLogger("ingest.watch").addHandler(logging.NullHandler())
    sync = FolderSync(paths, settings, debounce_ms=debounce, settle_ms=settle,
                      on_report=_printer(paths))
    try:
        sync.run()
    except KeyboardInterrupt:
        err.print("[yellow]stopped[/]: files already stored are kept; run the same command again to catch up")
        raise typer.Exit(130) from None
