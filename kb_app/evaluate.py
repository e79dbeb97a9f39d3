"""Retrieval quality on a judged query set: `kb eval`.

A set comes in the BEIR/MTEB layout: `corpus.jsonl` ({"_id", "title", "text"}), `queries.jsonl`
({"_id", "text"}), and judgements in `qrels/<split>.tsv` (query-id, corpus-id, score; a header line).
The corpus goes through kb's own pipeline (each document a Markdown file, so chunking, the instruction
and the model are kb's), searches return passages, and a document ranks where its best passage does.
Scores are the usual ones: nDCG@10 (graded, log2 discount), Recall@k, MRR@10, each averaged over the
queries that have at least one relevant document.
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
import re
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from ingest.errors import EvalError, KbError
from ingest.language import detect_language, main_language
from ingest.pipeline import ingest
from ingest.report import IngestReport, Progress
from ingest.settings import Settings

from .search import Searcher

RECALL_AT = (1, 5, 10, 100)
# Where `kb eval` and the Quality page write a set's corpus as files, to ingest it as any folder.
EVAL_WORK = Path.home() / ".cache" / "kb" / "eval"


@dataclass
class EvalSet:
    name: str
    corpus: dict[str, tuple[str, str]]  # id -> (title, text)
    queries: dict[str, str]
    qrels: dict[str, dict[str, int]]  # query id -> {document id: relevance > 0}
    # A parallel set's corpus is a folder of real files, ingested as they are: file path -> document id.
    folder: Path | None = None
    files: dict[str, str] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)  # query files passed over, each with its reason


def _jsonl(path: Path, fields: Sequence[str]) -> list[dict[str, Any]]:
    if not path.is_file():
        raise EvalError(f"{path} is missing: a BEIR set has corpus.jsonl, queries.jsonl and qrels/<split>.tsv")
    rows = []
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise EvalError(f"{path}, line {number}: not JSON ({exc.msg})") from None
            missing = [name for name in fields if name not in row]
            if missing:
                raise EvalError(f"{path}, line {number}: no {', '.join(repr(m) for m in missing)}")
            rows.append(row)
    return rows


def load_beir(folder: str | Path, split: str = "test") -> EvalSet:
    """A BEIR-layout set; only queries with a judgement in `split` are kept."""
    folder = Path(folder)
    corpus = {str(r["_id"]): (str(r.get("title") or ""), str(r["text"]))
              for r in _jsonl(folder / "corpus.jsonl", ["_id", "text"])}
    queries = {str(r["_id"]): str(r["text"]) for r in _jsonl(folder / "queries.jsonl", ["_id", "text"])}
    qrels_path = folder / "qrels" / f"{split}.tsv"
    if not qrels_path.is_file():
        raise EvalError(f"{qrels_path} is missing: the judgements for split {split!r} (--split)")
    qrels: dict[str, dict[str, int]] = {}
    with qrels_path.open(encoding="utf-8", newline="") as handle:
        for number, row in enumerate(csv.reader(handle, delimiter="\t"), start=1):
            if not row or (number == 1 and not row[-1].strip().lstrip("-").isdigit()):
                continue  # blank, or the header line
            if len(row) < 3:
                raise EvalError(f"{qrels_path}, line {number}: expected query-id, corpus-id and score")
            query, document, score = row[0].strip(), row[1].strip(), row[-1].strip()
            try:
                relevance = int(float(score))
            except ValueError:
                raise EvalError(f"{qrels_path}, line {number}: score {score!r} is not a number") from None
            if query not in queries:
                raise EvalError(f"{qrels_path}, line {number}: query {query!r} is not in queries.jsonl")
            if document not in corpus:
                raise EvalError(f"{qrels_path}, line {number}: document {document!r} is not in corpus.jsonl")
            if relevance > 0:
                qrels.setdefault(query, {})[document] = relevance
    if not qrels:
        raise EvalError(f"{qrels_path}: no query has a relevant document")
    return EvalSet(folder.name, corpus, {q: queries[q] for q in qrels}, qrels)


# -- parallel documents ------------------------------------------------------------------------

_FIRST_PARAGRAPH = (30, 400)  # characters: a sentence or two, as a person would paste in
# Section numbering in front of a title ("5.1. ", "附录 A. ", "第 3 章 ", "Chapter 2. "): the same in both
# languages, it would match a title by its number, not its words.
_NUMBERING = re.compile(
    r"^\s*(?:(?:第\s*[\dA-Z.]+\s*[章节節部])|(?:(?:Chapter|Kapitel|Appendix|Anhang|Annexe|Apéndice|Capitolo|附录|付録|부록)"
    r"\s*[\dA-Z][\d.]*\.?)|(?:[A-Z]\.(?:\d+\.?)*)|(?:\d+(?:\.\d+)*\.?))(?=\s|$)\s*")


def strip_numbering(title: str) -> str:
    return _NUMBERING.sub("", title, count=1).strip()


def in_language(text: str, language: str) -> bool:
    """Whether `text` is in `language`; text too short to tell passes unless it is plain ASCII and the
    language is not written in Latin letters (an untranslated English title in a Chinese book)."""
    found = detect_language(text)
    if found is not None and len(text) >= 20:
        return found == language
    return not (language in ("zh", "ja", "ko", "ru", "el", "uk", "ar", "he", "th") and text.isascii())


def _paragraphs(text: str, file_type: str) -> list[str]:
    """Paragraphs of a document's text: blank-line separated, or each line of a web page's (a block each)."""
    return [" ".join(p.split()) for p in re.split(r"\n" if file_type == "html" else r"\n\s*\n", text)
            if p.strip() and not p.lstrip().startswith("#")]


def parallel_set(queries: str | Path, targets: str | Path, include: list[str] | None = None,
                 exclude: list[str] | None = None) -> EvalSet:
    """A set from the same documents in two languages: each file under `queries` asks for the file with the
    same relative path under `targets`, by its title and by its first paragraph (`title:` and `para:`
    queries). Paragraphs found in a fifth or more of the files are boilerplate (navigation, footers)
    and not asked; a query left in the target's language (the same text in both files, or detected as
    the target's language) would not cross languages and is not asked either."""
    from ingest.discover import discover
    from ingest.errors import LoadError
    from ingest.formats import load

    queries, targets = Path(queries).expanduser().resolve(), Path(targets).expanduser().resolve()
    for folder in (queries, targets):
        if not folder.is_dir():
            raise EvalError(f"{folder} is not a folder: parallel mode takes two folders of the same documents")
    target_files, errors = discover([targets], include, exclude)  # as ingest will take them (KB_EXCLUDE...)
    query_files, query_errors = discover([queries], include, exclude)
    files = {str(path): str(path.relative_to(targets)) for path in target_files}
    skipped = [f"{e.path}: {e.reason}" for e in [*errors, *query_errors]]
    loaded = {}
    for path in query_files:
        relative = str(path.relative_to(queries))
        if relative not in files.values():
            skipped.append(f"{path}: no file {relative} under {targets}")
            continue
        try:
            asked, answer = load(path), load(targets / relative)
        except LoadError as exc:
            skipped.append(f"{exc.path}: {exc.reason}")
            continue
        loaded[relative] = (asked, answer)
    if not loaded:
        raise EvalError(f"no file under {queries} has a counterpart of the same name under {targets}")
    common: dict[str, int] = {}
    for asked, _ in loaded.values():
        for paragraph in {p for d in asked.documents for p in _paragraphs(d.text, d.file_type)}:
            common[paragraph] = common.get(paragraph, 0) + 1
    boilerplate = {p for p, n in common.items() if n >= max(2, len(loaded) // 5)}
    asked_in = main_language(asked.language for asked, _ in loaded.values())
    query_texts, qrels = {}, {}
    for relative, (asked, answer) in sorted(loaded.items()):
        first = lambda f: next((p for d in f.documents for p in _paragraphs(d.text, d.file_type)  # noqa: E731
                                if p not in boilerplate and len(p) >= _FIRST_PARAGRAPH[0]), "")
        candidates = [("title", strip_numbering(asked.title), strip_numbering(answer.title)),
                      ("para", first(asked)[: _FIRST_PARAGRAPH[1]], first(answer))]
        for kind, text, original in candidates:
            if not text or text == Path(relative).stem or text == original[: len(text)]:
                continue  # no title (the file name stands in), no paragraph, or left untranslated
            if asked_in and not in_language(text, asked_in):
                continue
            query_texts[f"{kind}:{relative}"] = text
            qrels[f"{kind}:{relative}"] = {relative: 1}
    if not qrels:
        raise EvalError(f"no query could be made from {queries}: "
                        f"no titles or paragraphs in another language than {targets}'s")
    corpus = {document: ("", "") for document in files.values()}
    return EvalSet(f"{queries.name}-{targets.name}", corpus, query_texts, qrels, targets, files, skipped)


# -- scores ----------------------------------------------------------------------------------


def ndcg(ranked: Sequence[str], relevant: dict[str, int], k: int = 10) -> float:
    gain = sum((2 ** relevant.get(doc, 0) - 1) / math.log2(rank + 2) for rank, doc in enumerate(ranked[:k]))
    ideal = sum((2 ** grade - 1) / math.log2(rank + 2)
                for rank, grade in enumerate(sorted(relevant.values(), reverse=True)[:k]))
    return gain / ideal if ideal else 0.0


def recall(ranked: Sequence[str], relevant: dict[str, int], k: int) -> float:
    return len(set(ranked[:k]) & set(relevant)) / len(relevant)


def reciprocal_rank(ranked: Sequence[str], relevant: dict[str, int], k: int = 10) -> float:
    return next((1.0 / (rank + 1) for rank, doc in enumerate(ranked[:k]) if doc in relevant), 0.0)


# -- a run -----------------------------------------------------------------------------------


@dataclass
class QueryResult:
    id: str
    query: str
    relevant: dict[str, int]
    ranked: list[str]  # document ids, best first (top 100)
    ndcg_at_10: float
    mrr_at_10: float
    recall: dict[str, float]


@dataclass
class EvalReport:
    set: str
    collection: str
    model: str
    queries: int
    documents: int
    scores: dict[str, float]
    seconds_per_query: float
    per_query: list[QueryResult] = field(default_factory=list)
    ingest: dict[str, Any] | None = None
    by_kind: dict[str, dict[str, float]] = field(default_factory=dict)
    recall_curve: list[float] = field(default_factory=list)  # mean recall@k for k = 1..100
    mode: str = "dense"  # how search ranked: dense, hybrid, dense+rerank, hybrid+rerank
    latency_ms: dict[str, float] = field(default_factory=dict)  # searches of 10 results (see search_latency)

    def to_dict(self, per_query: bool = False) -> dict[str, Any]:
        data = asdict(self)
        if not per_query:
            data.pop("per_query")
        return data


def _file_name(document_id: str) -> str:
    """A file per document, its id readable in the name and unique whatever characters it holds."""
    slug = re.sub(r"[^\w.-]+", "_", document_id)[:80].strip("._") or "doc"
    return f"{slug}-{hashlib.sha256(document_id.encode()).hexdigest()[:10]}.md"


def document_body(title: str, text: str) -> str:
    """A corpus document as the Markdown file kb ingests: its title as the heading."""
    return f"# {title}\n\n{text}\n" if title else f"{text}\n"


def write_corpus(evalset: EvalSet, folder: Path) -> dict[str, str]:
    """Each document as a Markdown file (its title as the heading); file path -> document id."""
    folder.mkdir(parents=True, exist_ok=True)
    sources = {}
    for document_id, (title, text) in evalset.corpus.items():
        path = folder / _file_name(document_id)
        body = document_body(title, text)
        if not path.exists() or path.read_text(encoding="utf-8") != body:
            path.write_text(body, encoding="utf-8")
        sources[str(path)] = document_id
    return sources


def evaluate(evalset: EvalSet, settings: Settings, work: Path, *, ingest_corpus: bool = True,
             progress: Progress | None = None, run_ingest: Callable[..., IngestReport] = ingest) -> EvalReport:
    """Ingest the set's corpus into `settings.collection` (unchanged documents are skipped) and score every
    judged query against it. `run_ingest` ingests the corpus (the UI passes its own, `ingest_here`)."""
    if evalset.folder is not None:
        folder, sources = evalset.folder, evalset.files
    else:
        folder = work / evalset.name / "corpus"
        sources = write_corpus(evalset, folder)
    report: IngestReport | None = None
    if ingest_corpus:
        report = run_ingest([folder], settings, progress=progress, prune=True)
        if not report.ok:
            failed = report.of("failed")
            raise EvalError(f"{len(failed)} corpus documents could not be ingested (first: {failed[0].source}: "
                            f"{failed[0].reason})")
    searcher = Searcher(settings)
    ids = list(evalset.queries)
    started = time.perf_counter()
    responses = searcher.search_many([evalset.queries[q] for q in ids], k=max(RECALL_AT) * 3)
    seconds = (time.perf_counter() - started) / max(1, len(ids))
    results = []
    for query_id, response in zip(ids, responses):
        ranked: list[str] = []
        for hit in response.results:  # a document ranks where its best passage does
            document = sources.get(hit.source)
            if document is not None and document not in ranked:
                ranked.append(document)
        relevant = evalset.qrels[query_id]
        results.append(QueryResult(
            query_id, evalset.queries[query_id], relevant, ranked[: max(RECALL_AT)],
            ndcg(ranked, relevant), reciprocal_rank(ranked, relevant),
            {f"recall@{k}": recall(ranked, relevant, k) for k in RECALL_AT},
        ))
    latency = search_latency(searcher, [evalset.queries[q] for q in ids[:LATENCY_QUERIES]])
    # Query ids of the form "kind:..." (title:, para: in bench.evalsets) are also scored by kind.
    kinds = sorted({r.id.split(":", 1)[0] for r in results}) if all(":" in r.id for r in results) else []
    return EvalReport(
        evalset.name, settings.collection, searcher.spec.model, len(results), len(evalset.corpus),
        _scores(results), round(seconds, 4), results,
        {"ingested": len(report.of("ingested")), "unchanged": len(report.of("unchanged")),
         "chunks": report.chunks} if report else None,
        ({kind: _scores([r for r in results if r.id.startswith(kind + ":")]) for kind in kinds}
         if len(kinds) > 1 else {}),
        recall_curve(results), responses[0].mode if responses else settings.search_mode, latency,
    )


LATENCY_QUERIES = 100


def search_latency(searcher: Searcher, queries: Sequence[str], k: int = 10) -> dict[str, float]:
    """How long searches of k results take, as a user would run them (scoring asks for 300 passages a query,
    which is not): p50 and p95 in ms of the search without its query embedding (queries are embedded 64 to
    a request here, unlike one at a time in use), the median of each stage, and the embedding's mean share."""
    if not queries:
        return {}
    responses = searcher.search_many(list(queries), k=k)
    search = sorted((r.seconds - r.timings.get("embed", 0.0)) * 1000 for r in responses)
    out = {"p50": percentile(search, 50), "p95": percentile(search, 95),
           "embed_share": _mean(r.timings.get("embed", 0.0) * 1000 for r in responses)}
    for stage in ("dense", "lexical", "fuse", "rerank"):
        values = sorted(r.timings[stage] * 1000 for r in responses if stage in r.timings)
        if values:
            out[stage] = percentile(values, 50)
    return {name: round(value, 2) for name, value in out.items()} | {"queries": len(responses)}


def percentile(ordered: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of sorted values."""
    index = max(0, min(len(ordered) - 1, round(q / 100 * len(ordered) + 0.5) - 1))
    return float(ordered[index])


def recall_curve(results: Sequence[QueryResult], depth: int = max(RECALL_AT)) -> list[float]:
    """Mean recall@k for every k from 1 to `depth`: how far down the list a reader must go to find what
    they need (a curve that is still climbing at 100 means answers that top-k retrieval never shows)."""
    return [round(_mean(recall(r.ranked, r.relevant, k) for r in results), 4) for k in range(1, depth + 1)]


def plot_recall(runs: Sequence[tuple[str, EvalReport]], path: str | Path) -> Path:
    """Recall@k against k (log scale) for each run, saved as a PNG: one line a variant, one figure."""
    import matplotlib

    matplotlib.use("Agg")  # files only: no display, no GUI toolkit
    import matplotlib.pyplot as plt

    path = Path(path)
    figure, axes = plt.subplots(figsize=(7.5, 4.5), dpi=120)
    try:
        for label, report in runs:
            k = range(1, len(report.recall_curve) + 1)
            axes.plot(k, report.recall_curve, label=f"{label}  (nDCG@10 {report.scores['ndcg@10']:.3f})", linewidth=1.8)
        axes.set_xscale("log")
        axes.set_xticks([1, 2, 5, 10, 20, 50, 100], labels=["1", "2", "5", "10", "20", "50", "100"])
        axes.set_ylim(0, 1.02)
        axes.set_xlabel("k (documents read)")
        axes.set_ylabel("recall@k")
        first = runs[0][1]
        axes.set_title(f"{first.set}: {first.queries} queries, {first.documents} documents ({first.model})", fontsize=9)
        axes.grid(True, which="major", alpha=0.3)
        axes.legend(loc="lower right", fontsize=8)
        figure.tight_layout()
        path.parent.mkdir(parents=True, exist_ok=True)
        figure.savefig(path)
    except OSError as exc:
        raise EvalError(f"cannot write the plot to {path}: {exc.strerror or exc}") from None
    finally:
        plt.close(figure)
    return path


def _scores(results: Sequence[QueryResult]) -> dict[str, float]:
    scores = {
        "ndcg@10": _mean(r.ndcg_at_10 for r in results),
        **{f"recall@{k}": _mean(r.recall[f"recall@{k}"] for r in results) for k in RECALL_AT},
        "mrr@10": _mean(r.mrr_at_10 for r in results),
    }
    return {name: round(value, 4) for name, value in scores.items()} | {"queries": len(results)}


def _mean(values: Any) -> float:  # noqa: ANN401
    values = list(values)
    return sum(values) / len(values) if values else 0.0


def parse_variant(text: str) -> dict[str, str]:
    """`name=value;name=value` -> settings to change (values are checked by Settings itself)."""
    changes = {}
    for part in text.split(";"):
        name, sep, value = part.partition("=")
        if not sep or not name.strip():
            raise EvalError(f"--vary {text!r}: expected name=value (e.g. chunk_tokens=256;overlap=32)")
        changes[name.strip().replace("-", "_")] = value.strip()
    return changes


_SHAPING = ("model", "instruction", "query_task", "dimensions", "tokenizer", "chunk_tokens", "overlap", "headings")


def compare(evalset: EvalSet, base: Settings, variants: Sequence[dict[str, str]], work: Path, *,
            ingest_corpus: bool = True, progress: Progress | None = None) -> list[tuple[str, EvalReport]]:
    """The base settings and each variant scored on the same set in one run, each in a collection of its
    own (a different model, chunking or instruction makes different vectors)."""
    from ingest.settings import load_settings

    runs = []
    # The base run is named by what it was given that shapes the vectors, so a table or plot reads alone.
    given = [f"{k}={getattr(base, k)}" for k in _SHAPING if k in base.model_fields_set]
    for changes in [{}, *variants]:
        label = (";".join(f"{k}={v}" for k, v in changes.items())
                 or ("base" + (f" ({';'.join(given)})" if given else "")))
        flags = {**{k: v for k, v in base.model_dump().items() if k in base.model_fields_set}, **changes}
        # Variants that only search differently (search_mode, rerank, ...) share the base's collection.
        shaping = ";".join(f"{k}={v}" for k, v in changes.items() if k in _SHAPING)
        digest = hashlib.sha256(shaping.encode()).hexdigest()[:8]
        flags["collection"] = f"{base.collection}-{digest}" if shaping else base.collection
        try:
            settings = load_settings(**flags)
        except KbError as exc:
            raise EvalError(f"--vary {label}: {exc}") from None
        runs.append((label, evaluate(evalset, settings, work, ingest_corpus=ingest_corpus, progress=progress)))
    return runs

