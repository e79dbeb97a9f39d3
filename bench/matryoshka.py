"""Matryoshka: retrieval quality and store size at reduced `dimensions`, against the full dimension, in one run.

Qwen3-Embedding's weights are on no package registry, so the model here is WordLlama's bundled 256-d model
(trained with Matryoshka loss; English), served through the simulated SGLang server (`--vectors
wordllama`), which truncates and re-normalises for `dimensions` as SGLang and vLLM do. kb sends
`dimensions` with every request and stores what comes back, exactly as it would against Qwen3 on a GPU.
Each dimension is its own collection in one embedded store; the size is the collection's vector segment
on disk (HNSW graph and vectors) after the run.

    python -m bench.matryoshka ~/.cache/kb/eval-sets/handbook-en-en --no-headings --dimensions 256,128,64,32
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import sys
import tempfile
from pathlib import Path

from bench.servers import SimulatedServer
from bench.simserver import WORDLLAMA
from ingest.settings import load_settings
from kb_app.evaluate import compare, load_beir


def collection_bytes(chroma_path: Path, name: str) -> int:
    """Bytes on disk of a collection's vector segment (the HNSW index and its vectors)."""
    db = sqlite3.connect(f"file:{chroma_path / 'chroma.sqlite3'}?mode=ro", uri=True)
    try:
        rows = db.execute(
            "SELECT segments.id FROM segments JOIN collections ON segments.collection = collections.id "
            "WHERE collections.name = ? AND segments.scope = 'VECTOR'", (name,)).fetchall()
    finally:
        db.close()
    return sum(f.stat().st_size for (segment,) in rows for f in (chroma_path / segment).glob("**/*") if f.is_file())


def run(set_path: Path, dimensions: list[int], work: Path, speed: float, headings: bool = True) -> list[dict]:
    evalset = load_beir(set_path)
    store = work / "chroma"
    with SimulatedServer(speed=speed, extra=["--vectors", "wordllama"], log=work / "simserver.log") as server:
        base = load_settings(endpoint=[server.url], model=WORDLLAMA, tokenizer="server", chroma_path=store,
                             collection=f"mrl-{evalset.name}{'' if headings else '-noh'}", dimensions=dimensions[0],
                             headings=headings)
        runs = compare(evalset, base, [{"dimensions": str(d)} for d in dimensions[1:]], work)
    rows = []
    for (_, report), dim in zip(runs, dimensions):
        size = collection_bytes(store, report.collection)
        rows.append({"dimensions": dim, "collection": report.collection, **{
            k: report.scores[k] for k in ("ndcg@10", "recall@10", "recall@100", "mrr@10")},
            "bytes": size,
            "search_ms_p50": report.latency_ms.get("p50")})
    full = rows[0]
    for row in rows:
        row["quality_vs_full"] = round(row["ndcg@10"] / full["ndcg@10"], 3) if full["ndcg@10"] else None
        row["size_vs_full"] = round(row["bytes"] / full["bytes"], 3) if full["bytes"] else None
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.matryoshka", description=__doc__.split("\n\n")[0])
    parser.add_argument("set", type=Path, help="a BEIR-layout eval set (python -m bench.evalsets builds them)")
    parser.add_argument("--dimensions", default="256,128,64,32", help="the first is the full dimension")
    parser.add_argument("--work", type=Path, default=None, help="where the store goes [a temporary folder]")
    parser.add_argument("--speed", type=float, default=20.0, help="simulated GPU speed-up (time is not measured)")
    parser.add_argument("--no-headings", dest="headings", action="store_false",
                        help="no heading entries (on handbook-en-en a title query meets its own heading: saturated)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    work = args.work or Path(tempfile.mkdtemp(prefix="kb-mrl-"))
    rows = run(args.set, [int(d) for d in args.dimensions.split(",")], work, args.speed, args.headings)
    if args.json:
        sys.stdout.write(json.dumps(rows, indent=2) + "\n")
        return
    print("| dimensions | nDCG@10 | Recall@10 | Recall@100 | MRR@10 | vector segment | nDCG vs full | size vs full |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        print(f"| {r['dimensions']} | {r['ndcg@10']:.3f} | {r['recall@10']:.3f} | {r['recall@100']:.3f} | "
              f"{r['mrr@10']:.3f} | {r['bytes'] / 1e6:.1f} MB | {r['quality_vs_full']:.3f} | {r['size_vs_full']:.3f} |")


if __name__ == "__main__":
    main()
