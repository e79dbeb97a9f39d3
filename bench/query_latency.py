"""Search latency on a knowledge base: the first query (model load included) and warm queries.

    python -m bench.query_latency [--chroma-path DIR] [--collection NAME] [--repeat 20]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time

from ingest.settings import load_settings
from kb_app.search import Searcher

QUERIES = ["What do giant pandas eat?", "火山是怎么形成的？", "How do bees tell direction?", "咖啡的水温",
           "sourdough hydration"]


async def measure(searcher: Searcher, repeat: int) -> tuple[float, list[float]]:
    started = time.perf_counter()
    await searcher.asearch("太阳能电池板是怎样把阳光变成电的？")
    first = time.perf_counter() - started
    warm = []
    for i in range(repeat):
        started = time.perf_counter()
        await searcher.asearch(QUERIES[i % len(QUERIES)])
        warm.append(time.perf_counter() - started)
    return first, warm


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--chroma-path")
    parser.add_argument("--collection")
    parser.add_argument("--repeat", type=int, default=20)
    args = parser.parse_args()
    settings = load_settings(chroma_path=args.chroma_path, collection=args.collection)
    first, warm = asyncio.run(measure(Searcher(settings), args.repeat))
    print(f"first query {first * 1000:.0f} ms; warm p50 {statistics.median(warm) * 1000:.1f} ms, "
          f"max {max(warm) * 1000:.1f} ms over {len(warm)}")


if __name__ == "__main__":
    main()
