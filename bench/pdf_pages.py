"""Pages per second parsing real PDFs through kb's own loader (`ingest.formats.load`: pypdf text per page,
plus the language of each page), with 1 and 2 worker processes.

Files are handed out in discovery order, one at a time, to a pool of spawned processes (as kb's pipeline
does); the wall time runs from the pool's first task to its last result, the pool's start excluded.

    python -m bench.pdf_pages                  # the `pdf` corpus of bench.corpus, 1 and 2 processes
    python -m bench.pdf_pages PATH... --workers 1,2 --json
    python -m bench.run --corpus pdf --pdf-pages
"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Sequence

from ingest.processes import process_pool


@dataclass
class FilePages:
    source: str
    bytes: int
    pages: int  # in the file
    text_pages: int  # pages with text
    seconds: float
    failed: str | None = None
    warnings: list[str] = field(default_factory=list)


@dataclass
class PagesRun:
    workers: int
    files: int
    failed_files: int
    pages: int
    text_pages: int
    seconds: float
    pages_per_s: float
    files_detail: list[FilePages]


def parse_one(path: str) -> FilePages:
    from ingest.errors import LoadError
    from ingest.formats import load

    started = time.perf_counter()
    size = os.path.getsize(path)
    try:
        loaded = load(path)
    except LoadError as exc:
        return FilePages(path, size, 0, 0, round(time.perf_counter() - started, 3), failed=exc.reason)
    except Exception as exc:  # a parser crash is a finding, not the end of the measurement
        return FilePages(path, size, 0, 0, round(time.perf_counter() - started, 3),
                         failed=f"{type(exc).__name__}: {exc}")
    return FilePages(path, size, loaded.pages or 0, len(loaded.documents), round(time.perf_counter() - started, 3),
                     warnings=loaded.warnings)


def _warm() -> None:
    import logging

    import ingest.formats  # noqa: F401

    logging.getLogger("pypdf").setLevel(logging.ERROR)  # "Multiple definitions in dictionary ...", per object
    import pycld2  # noqa: F401
    import pypdf  # noqa: F401


def pdf_files(paths: Sequence[str | Path]) -> list[Path]:
    from ingest.discover import discover

    files, _ = discover(paths, include=["*.pdf"])
    return files


def measure(paths: Sequence[str | Path], workers: int, on_file: Callable[[FilePages], None] | None = None) -> PagesRun:
    files = pdf_files(paths)
    with process_pool("kb-parse", workers, _warm) as pool:
        list(pool.map(_noop, range(workers)))  # processes started and imports done before the clock starts
        started = time.perf_counter()
        details = []
        for result in pool.map(parse_one, [str(f) for f in files]):
            details.append(result)
            if on_file:
                on_file(result)
        seconds = time.perf_counter() - started
    pages = sum(d.pages for d in details)
    return PagesRun(workers, len(files), sum(1 for d in details if d.failed), pages, sum(d.text_pages for d in details),
                    round(seconds, 2), round(pages / seconds, 1) if seconds else 0.0, details)


def _noop(_: int) -> None:
    return None


def main(argv: list[str] | None = None) -> None:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m bench.pdf_pages", description=__doc__.split("\n\n")[0])
    parser.add_argument("paths", nargs="*", help="PDF files or folders (default: the `pdf` corpus)")
    parser.add_argument("--workers", default="1,2", help="comma-separated process counts [1,2]")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    paths = args.paths
    if not paths:
        from bench.corpus import fetch

        paths = fetch("pdf")
    runs = [measure(paths, int(n)) for n in args.workers.split(",")]
    if args.json:
        sys.stdout.write(json.dumps([asdict(r) for r in runs], indent=2) + "\n")
        return
    print_runs(runs)


def print_runs(runs: list[PagesRun]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table("processes", "files (failed)", "pages (with text)", "MB", "wall", "pages/s")
    for run in runs:
        table.add_row(str(run.workers), f"{run.files} ({run.failed_files})", f"{run.pages:,} ({run.text_pages:,})",
                      f"{sum(d.bytes for d in run.files_detail) / 1e6:.1f}", f"{run.seconds:.1f} s",
                      f"{run.pages_per_s:.1f}")
    console = Console()
    console.print(table)
    for detail in runs[0].files_detail if runs else []:
        if detail.failed or detail.warnings:
            console.print(f"{detail.source}: {detail.failed or '; '.join(detail.warnings)}", highlight=False)


if __name__ == "__main__":
    main()
