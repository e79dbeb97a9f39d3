"""Search latency, memory and disk as the store grows: embedded Chroma against a `chroma run` server.

    python -m bench.scale --sizes 10000,100000,1000000 --dims 1024,2560 [--ef-search 16,32,64,100,200]

For each size and dimension it builds one kb collection (kb's own write path and layout: chunk and
document collections, HNSW with kb's settings) of synthetic chunks, and keeps it under `--cache`, so a
second run only measures. The same folder is then searched twice, one after the other: opened embedded
in a fresh process, and served by `chroma run`. For each it reports

- the first query (the HNSW index read from disk),
- p50/p95 of `KnowledgeBase.query` for 10 results (the vector search alone),
- p50/p95 of `Searcher.asearch` against the simulated embedding server (the query embedded, then searched),
- recall@10 against exact search, for each ef_search given,
- resident memory (the embedded search process, or the server) and disk (the store folder).

Vectors: real embeddings are not uniform in their space (HNSW's worst case) but lie near a
low-dimensional manifold with topics. The generator draws each chunk from one of 1,000 topic centres in a
64-dimensional latent space, mapped to the full dimension and normalised, and each query as a stored
chunk moved by noise, so exact neighbours are known. Texts are windows of the sample documents.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import multiprocessing
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from ingest.knowledge_base import HNSW
from kb_app.benchmark import rss_bytes
from kb_app.evaluate import percentile

LATENT, TOPICS, DOC_CHUNKS, BATCH = 64, 1000, 50, 4000
COLLECTION = "scale"
DEFAULT_EF = HNSW["ef_search"]  # kb's: the search with embedding is measured at it
MODELS = {1024: ("0.6b", "Qwen/Qwen3-Embedding-0.6B"), 2560: ("4b", "Qwen/Qwen3-Embedding-4B"),
          4096: ("8b", "Qwen/Qwen3-Embedding-8B")}  # the Qwen3 model whose native dimension it is (else 0.6B, cut)


def _model(dim: int) -> tuple[str, str]:
    return MODELS.get(dim, MODELS[1024])


class Vectors:
    """Deterministic synthetic embeddings: batch b of size BATCH is always the same."""

    def __init__(self, dim: int, seed: int = 7) -> None:
        rng = np.random.default_rng(seed)
        self.dim, self.seed = dim, seed
        self.basis = rng.standard_normal((LATENT, dim)).astype(np.float32) / np.sqrt(LATENT)
        self.centres = rng.standard_normal((TOPICS, LATENT)).astype(np.float32)

    def _latent(self, start: int, count: int) -> np.ndarray:
        rng = np.random.default_rng([self.seed, start])
        topics = rng.integers(0, TOPICS, count)
        return self.centres[topics] + 0.6 * rng.standard_normal((count, LATENT)).astype(np.float32)

    def _embed(self, latent: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        vectors = latent @ self.basis + 0.15 * rng.standard_normal((len(latent), self.dim)).astype(np.float32)
        return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)

    def batch(self, start: int, count: int) -> np.ndarray:
        return self._embed(self._latent(start, count), np.random.default_rng([self.seed, start, 1]))

    def queries(self, n: int, count: int) -> np.ndarray:
        """Stored chunks moved in the latent space: near their source, not on it."""
        rng = np.random.default_rng([self.seed, 99])
        picks = np.sort(rng.choice(n, count, replace=False))
        latent = np.vstack([self._latent(p - p % BATCH, BATCH)[p % BATCH] for p in picks])
        return self._embed(latent + 0.5 * rng.standard_normal(latent.shape).astype(np.float32), rng)

    def exact(self, n: int, queries: np.ndarray, k: int = 10) -> np.ndarray:
        """Indices of the k nearest stored chunks to each query (cosine), by brute force."""
        best_scores = np.full((len(queries), k), -np.inf, dtype=np.float32)
        best_ids = np.zeros((len(queries), k), dtype=np.int64)
        for start in range(0, n, BATCH):
            scores = queries @ self.batch(start, min(BATCH, n - start)).T
            ids = np.broadcast_to(np.arange(start, start + scores.shape[1]), scores.shape)
            both_scores = np.hstack([best_scores, scores])
            both_ids = np.hstack([best_ids, ids])
            top = np.argsort(-both_scores, axis=1)[:, :k]
            best_scores = np.take_along_axis(both_scores, top, 1)
            best_ids = np.take_along_axis(both_ids, top, 1)
        return best_ids


def _texts() -> list[str]:
    """~1,000-character windows of the sample documents (realistic text for Chroma's full-text index)."""
    words: list[str] = []
    for path in sorted(Path(__file__).resolve().parent.parent.joinpath("data").rglob("*")):
        if path.suffix in (".md", ".txt"):
            words.extend(path.read_text(encoding="utf-8", errors="replace").split())
    windows = [" ".join(words[i:i + 160]) for i in range(0, max(1, len(words) - 160), 37)]
    return windows or ["lorem ipsum " * 80]


def _settings(path: Path, **extra: Any):  # noqa: ANN202
    from ingest.settings import Settings

    return Settings(chroma_path=path, collection=COLLECTION, **extra)


def build(path: Path, n: int, dim: int) -> dict[str, Any]:
    """The collection of n synthetic chunks at `path`, through kb's KnowledgeBase (BM25 index off)."""
    from ingest.knowledge_base import DocumentWrite, KnowledgeBase
    from ingest.records import CollectionSpec, DocumentRecord, now

    marker = path / "kb-scale.json"
    if marker.exists():
        return json.loads(marker.read_text())
    kb = KnowledgeBase.open(_settings(path))
    kb.lexical_dir = None  # the dense search is measured
    # An interrupted build resumes: batches are deterministic and chunk ids too, so the last one is rewritten.
    done = kb.count() // BATCH * BATCH if kb.exists() else 0
    progress = path / "kb-scale-progress.json"
    spent = json.loads(progress.read_text())["seconds"] if done and progress.exists() else 0.0
    _, model = _model(dim)
    kb.ensure(CollectionSpec(model=model, dimension=dim, instruction="qwen3",
                             query_task="Given a web search query, retrieve relevant passages that answer the query",
                             tokenizer="Qwen/Qwen3-Embedding-0.6B", chunk_tokens=256, overlap=32))
    vectors, texts = Vectors(dim), _texts()
    started = time.perf_counter() - spent
    for start in range(done, n, BATCH):
        count = min(BATCH, n - start)
        batch = vectors.batch(start, count)
        writes = []
        for first in range(0, count, DOC_CHUNKS):
            rows = range(start + first, start + min(first + DOC_CHUNKS, count))
            source, sha, ids = _document(rows)
            metadatas = [{"source": source, "chunk": i - rows[0], "file_type": "md", "language": "en",
                          "tokens": 250} for i in rows]
            record = DocumentRecord(source=source, sha256=sha, file_type="md", title=source, chunks=len(rows),
                                    tokens=250 * len(rows), pages=None, size=1000 * len(rows),
                                    chunking="scale", ingested_at=now())
            writes.append(DocumentWrite(record, ids, batch[first:first + len(rows)],
                                        [texts[i % len(texts)] for i in rows], metadatas))
        kb.write_documents(writes)
        progress.write_text(json.dumps({"seconds": time.perf_counter() - started}))
        if (start // BATCH) % 25 == 0:
            print(f"  built {start + count:,}/{n:,} ({(time.perf_counter() - started) / (start + count) * 1000:.2f} "
                  "ms a chunk)", flush=True)
    seconds = time.perf_counter() - started
    info = {"n": n, "dim": dim, "build_s": round(seconds, 1), "ms_per_chunk": round(seconds / n * 1000, 3)}
    del kb
    marker.write_text(json.dumps(info))
    return info


def _document(rows: range) -> tuple[str, str, list[str]]:
    """The synthetic document holding chunks `rows` (DOC_CHUNKS to a document): source, sha256, chunk ids."""
    from ingest.records import chunk_id

    source = f"corpus/doc{rows[0] // DOC_CHUNKS:06d}.md"
    sha = hashlib.sha256(source.encode()).hexdigest()
    return source, sha, [chunk_id(source, sha, None, i) for i in rows]


def _rss_mb(pid: int) -> float:
    return rss_bytes(pid) / (1024 * 1024)


def _pct(values: list[float], q: float) -> float:
    """The q-th percentile of seconds, in ms."""
    return round(percentile(sorted(values), q) * 1000, 2)


def _set_ef(path: str, chroma_url: str | None, ef: int) -> int:
    """Record ef_search in the collection's configuration; the value it had. An index already in memory
    keeps the ef it was loaded with: only a process (or server) that loads it afterwards uses the new one."""
    from ingest.knowledge_base import KnowledgeBase

    kb = KnowledgeBase.open(_settings(Path(path), chroma_url=chroma_url))
    collection = kb.client.get_collection(COLLECTION, embedding_function=None)
    had = collection.configuration_json["hnsw"]["ef_search"]
    if had != ef:
        collection.modify(configuration={"hnsw": {"ef_search": ef}})
    return had


def _measure(path: str, n: int, chroma_url: str | None, sim_url: str, sim_model: str, queries: np.ndarray,
             exact: np.ndarray, repeat: int, with_embedding: bool) -> dict[str, Any]:
    """In a fresh process, so the embedded index is loaded with the ef_search just set, and its memory
    is this search's alone."""
    from ingest.knowledge_base import KnowledgeBase
    from kb_app.search import Searcher

    baseline = _rss_mb(os.getpid())
    settings = _settings(Path(path), chroma_url=chroma_url, endpoint=[sim_url])
    kb = KnowledgeBase.open(settings)
    position = {chunk: i for i, chunk in enumerate(_ids(n))}
    began = time.perf_counter()
    kb.query(queries[0], 10)
    out: dict[str, Any] = {"first_query_ms": round((time.perf_counter() - began) * 1000, 1)}
    times, hits = [], 0
    for i in range(max(repeat, len(queries))):
        began = time.perf_counter()
        found = kb.query(queries[i % len(queries)], 10)
        times.append(time.perf_counter() - began)
        if i < len(queries):
            hits += len({position.get(c.id) for c in found} & set(exact[i].tolist()))
    out["recall@10"] = round(hits / (10 * len(queries)), 4)
    out["search_p50_ms"], out["search_p95_ms"] = _pct(times, 50), _pct(times, 95)
    if with_embedding:
        searcher = Searcher(settings.model_copy(update={"model": sim_model}))
        words = ["volcano", "panda", "solar", "coffee", "bees", "bread", "tea", "river"]

        async def searches() -> list[float]:
            spent = []
            await searcher.asearch("warm up")
            for i in range(repeat):
                began = time.perf_counter()
                await searcher.asearch(f"how does the {words[i % len(words)]} work {i}", k=10)
                spent.append(time.perf_counter() - began)
            await searcher.aclose()
            return spent

        times = asyncio.run(searches())
        out["with_embedding_p50_ms"], out["with_embedding_p95_ms"] = _pct(times, 50), _pct(times, 95)
    out["client_rss_mb"] = round(_rss_mb(os.getpid()) - baseline, 1)
    return out


def _ids(n: int) -> list[str]:
    """Every chunk id of an n-chunk build, in the order the vectors were generated."""
    return [i for first in range(0, n, DOC_CHUNKS) for i in _document(range(first, min(first + DOC_CHUNKS, n)))[2]]


def _du_mb(path: Path) -> float:
    return round(sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 1e6, 1)


def run(sizes: list[int], dims: list[int], stores: list[str], cache: Path, ef_list: list[int],
        queries_n: int, repeat: int, log=print) -> list[dict[str, Any]]:  # noqa: ANN001
    from bench.servers import SimulatedServer
    from tests.rigs.servers import ChromaServer

    rows = []
    context = multiprocessing.get_context("spawn")
    for dim in dims:
        size_name, _ = _model(dim)
        with SimulatedServer(model_size=size_name, dim=dim, log=cache / f"sim-{dim}.log") as sim:
            for n in sizes:
                path = cache / f"{n}-{dim}"
                log(f"{n:,} chunks of {dim} dimensions: {path}")
                with context.Pool(1) as pool:  # its client's index memory goes with the process
                    info = pool.apply(build, (path, n, dim))
                vectors = Vectors(dim)
                queries = vectors.queries(n, queries_n)
                truth_file = path / f"exact-{queries_n}.npy"
                if truth_file.exists():
                    exact = np.load(truth_file)
                else:
                    exact = vectors.exact(n, queries)
                    np.save(truth_file, exact)
                for store in stores:
                    for ef in ef_list:
                        server = None
                        try:
                            if store == "server":
                                server = ChromaServer(path, cache / f"chroma-{n}-{dim}.log")
                            with context.Pool(1) as pool:
                                had = pool.apply(_set_ef, (str(path), server.url if server else None, ef))
                                if server is not None and had != ef:  # reloaded with the new ef
                                    server.close()
                                    server = ChromaServer(path, cache / f"chroma-{n}-{dim}.log")
                            with context.Pool(1) as pool:
                                result = pool.apply(_measure, (
                                    str(path), n, server.url if server else None, sim.url, sim.model, queries,
                                    exact, repeat, ef == DEFAULT_EF))
                            if server is not None:
                                result["server_rss_mb"] = round(_rss_mb(server.process.pid), 1)
                        finally:
                            if server is not None:
                                server.close()
                        row = {"n": n, "dim": dim, "store": store, "ef_search": ef, "disk_mb": _du_mb(path),
                               **info, **result}
                        log(json.dumps(row))
                        rows.append(row)
                with context.Pool(1) as pool:
                    pool.apply(_set_ef, (str(path), None, DEFAULT_EF))
    return rows


def table(rows: list[dict[str, Any]]) -> str:
    """docs/benchmarks.md's tables: each size, dimension and store at the ef_search its search with embedding
    was measured at; then recall and latency by ef_search."""
    lines = ["| chunks | dim | store | ef_search | first query | search p50 / p95 | with embedding p50 / p95 | "
             "recall@10 | memory | disk |", "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        if "with_embedding_p50_ms" in r:
            memory = r.get("server_rss_mb") or r["client_rss_mb"]
            lines.append(f"| {r['n']:,} | {r['dim']} | {r['store']} | {r['ef_search']} | "
                         f"{r['first_query_ms'] / 1000:.1f} s | {r['search_p50_ms']:.1f} / {r['search_p95_ms']:.1f} ms"
                         f" | {r['with_embedding_p50_ms']:.1f} / "
                         f"{r['with_embedding_p95_ms']:.1f} ms | {r['recall@10']:.3f} | {memory / 1000:.2f} GB | "
                         f"{r['disk_mb'] / 1000:.2f} GB |")
    efs = sorted({r["ef_search"] for r in rows})
    lines += ["", "| chunks | dim | store | " + " | ".join(f"ef_search {e}" for e in efs) + " |",
              "| --- | --- | --- | " + " | ".join("---" for _ in efs) + " |"]
    for key in dict.fromkeys((r["n"], r["dim"], r["store"]) for r in rows):
        cells = {r["ef_search"]: f"{r['recall@10']:.3f}, {r['search_p50_ms']:.1f} ms" for r in rows
                 if (r["n"], r["dim"], r["store"]) == key}
        lines.append(f"| {key[0]:,} | {key[1]} | {key[2]} | " + " | ".join(cells.get(e, "") for e in efs) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="10000,100000")
    parser.add_argument("--dims", default="1024,2560")
    parser.add_argument("--stores", default="embedded,server")
    parser.add_argument("--ef-search", default=str(DEFAULT_EF),
                        help=f"ef_search values to measure recall and latency at (with embedding: at {DEFAULT_EF})")
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--repeat", type=int, default=200)
    parser.add_argument("--cache", type=Path, default=Path.home() / ".cache" / "kb" / "bench" / "scale")
    parser.add_argument("--json", type=Path, help="write the rows here")
    parser.add_argument("--report", type=Path, nargs="+",
                        help="print docs/benchmarks.md's tables from earlier --json files")
    args = parser.parse_args()
    if args.report:
        print(table([row for path in args.report for row in json.loads(path.read_text())]))
        return
    ints = lambda text: [int(x) for x in text.split(",") if x]  # noqa: E731
    args.cache.mkdir(parents=True, exist_ok=True)
    rows = run(ints(args.sizes), ints(args.dims), args.stores.split(","), args.cache, ints(args.ef_search),
               args.queries, args.repeat, log=lambda text: print(text, flush=True))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    print(table(rows))


if __name__ == "__main__":
    main()
