"""Chunk-level reuse, measured: a one-paragraph edit of a long document, re-ingested with reuse (what kb does)
and with every chunk embedded again (what it did before, and what `--force` still does), side by side in one run.

The document is kb's own documentation (docs/*.md and README.md, real prose with many sections) joined into one
Markdown file, repeated until it holds about `--chunks` chunks. The edit rewrites one paragraph in the middle.
The embedding server is the simulated GPU server (bench.simserver: Qwen3-Embedding-4B's timing on one H200) or,
with `--embedded`, kb's embedded model on this machine's CPU.

    python -m bench.reuse [--chunks 500] [--embedded] [--json]
"""

from __future__ import annotations

import argparse
import json
import re
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from ingest.pipeline import ingest
from ingest.settings import Settings, load_settings

ROOT = Path(__file__).resolve().parents[1]
EDIT = "This paragraph was rewritten for the benchmark: one edit, in one section, of a long manual."


def long_manual(chunks: int, settings: Settings) -> str:
    """kb's docs as one Markdown file, repeated (each copy's lines numbered) to about `chunks` chunks."""
    from ingest.chunking import ChunkerSpec
    from ingest.embeddings import make_embedder

    texts = [p.read_text(encoding="utf-8") for p in sorted((ROOT / "docs").glob("*.md"))]
    texts.append((ROOT / "README.md").read_text(encoding="utf-8"))
    chunker = ChunkerSpec.of(settings, make_embedder(settings)).build()
    parts: list[str] = []
    copy = 0
    while len(chunker.split("\n\n".join(parts))) < chunks:
        copy += 1
        # Each copy's headings and prose lines marked with its number: no chunk repeats another copy's.
        parts += [_numbered(t, copy) for t in texts]
    return "\n\n".join(parts)


def _numbered(text: str, copy: int) -> str:
    """`text` with `(copy)` after each `## ` and before each line of prose."""
    return re.sub(r"(?m)^(## |[A-Za-z])",
                  lambda m: f"## ({copy}) " if m.group(1) == "## " else f"({copy}) {m.group(1)}", text)


def edit_middle(text: str) -> str:
    """The text with one paragraph near its middle replaced by EDIT."""
    middle = len(text) // 2
    start = text.index("\n\n", middle) + 2
    while text[start] in "#|`-*>0123456789 ":  # a paragraph of prose, not a heading, table, list or code
        start = text.index("\n\n", start) + 2
    end = text.index("\n\n", start)
    return text[:start] + EDIT + text[end:]


@dataclass
class Run:
    what: str
    chunks: int
    embedded: int
    reused: int
    seconds: float
    embed_seconds: float  # summed over the requests in flight: the embedding server's share


def measure(settings: Settings, folder: Path, what: str, force: bool = False) -> Run:
    started = time.perf_counter()
    report = ingest([folder], settings, force=force)
    seconds = time.perf_counter() - started
    assert report.ok, [o.reason for o in report.of("failed")]
    return Run(what, report.chunks, report.embedded, report.reused, round(seconds, 2),
               round(report.stages.embed_wall, 2))


def run(chunks: int, embedded: bool) -> list[Run]:
    work = Path(tempfile.mkdtemp(prefix="kb-reuse-"))
    folder = work / "docs"
    folder.mkdir()
    server = None
    if embedded:
        settings = load_settings(chroma_path=work / "chroma")
    else:
        from bench.servers import SimulatedServer

        server = SimulatedServer("4b")
        settings = load_settings(chroma_path=work / "chroma", endpoint=[server.url], model=server.model,
                                 tokenizer="qwen3")
    try:
        text = long_manual(chunks, settings)
        path = folder / "manual.md"
        path.write_text(text, encoding="utf-8")
        edited = edit_middle(text)
        # The first replacement of a document's entries costs Chroma far more than later ones: it is done
        # first, as a warm-up, so that neither side of the comparison pays it.
        steps = [(text, "first ingest", False), (edited, "warm-up: the first replacement (--force)", True),
                 (text, "the edit undone, every chunk embedded (--force)", True),
                 (edited, "**one-paragraph edit, every chunk embedded (before; --force)**", True),
                 (text, "the edit undone, with reuse", False),
                 (edited, "**one-paragraph edit, with reuse (kb now)**", False)]
        runs = []
        for content, what, force in steps:
            path.write_text(content, encoding="utf-8")
            runs.append(measure(settings, folder, what, force))
        return runs
    finally:
        if server is not None:
            server.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.reuse", description=__doc__.split("\n\n")[0])
    parser.add_argument("--chunks", type=int, default=500, help="about this many chunks in the document")
    parser.add_argument("--embedded", action="store_true", help="kb's embedded model instead of the simulated GPU")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    runs = run(args.chunks, args.embedded)
    if args.json:
        print(json.dumps([asdict(r) for r in runs], indent=2))
        return
    print("| run | entries (chunks and headings) | embedded | reused | run, s | embedding requests, s |")
    print("| --- | --- | --- | --- | --- | --- |")
    for r in runs:
        print(f"| {r.what} | {r.chunks} | {r.embedded} | {r.reused} | {r.seconds:.2f} | {r.embed_seconds:.2f} |")


if __name__ == "__main__":
    main()
