"""Semantic, cross-lingual search over a knowledge base.

The query is embedded with the model and instruction the collection was built with (read from the
collection's metadata), so a Chinese question meets English passages in the same vector space.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Sequence

from ingest.embeddings import Embedder, make_embedder
from ingest.errors import ConfigError, SearchError, StoreError
from ingest.formats import part_name
from ingest.instructions import Instruction
from ingest.knowledge_base import KnowledgeBase
from ingest.language import main_language, query_language
from ingest.query_cache import QueryCache, QueryProfile
from ingest.records import StoredChunk
from ingest.settings import Settings
from kb_app.rerank import Reranker, make_reranker


@dataclass(frozen=True)
class SearchResult:
    rank: int
    score: float
    text: str
    source: str
    page: int | None
    chunk_id: str
    title: str
    file_type: str
    start: int | None
    end: int | None
    language: str | None = None
    heading: str | None = None  # the heading that matched, when the passage was found by its section's heading
    sheet: str | None = None  # a spreadsheet's sheet (its number is `page`)
    chapter: str | None = None  # an e-book's chapter (its number is `page`)
    ocr: bool = False  # the passage was read by OCR from a scan or a photo
    # Each stage's view of the passage (None: the stage did not run, or did not find it). `score` is the
    # last stage's: rerank, else fused (hybrid), else dense cosine similarity.
    dense_rank: int | None = None
    dense_score: float | None = None
    lexical_rank: int | None = None
    lexical_score: float | None = None  # BM25
    fused_score: float | None = None  # reciprocal rank fusion
    rerank_score: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """The fields, and `location` as the CLI and UI show it."""
        return asdict(self) | {"location": self.location}

    @property
    def location(self) -> str:
        """Where in its file the passage is, as a reader would say it: "page 4", "slide 3", "sheet Budget",
        "chapter The Voyage"; empty for a file read whole."""
        if self.sheet:
            return f"sheet {self.sheet}"
        if self.chapter:
            return f"chapter {self.chapter}"
        return f"{part_name(self.file_type)} {self.page}" if self.page else ""

    def stages(self) -> str:
        """Each stage's rank and score, e.g. "dense #3 0.612 · bm25 #1 7.20 · rrf 0.0323 · rerank 0.914"."""
        parts = []
        if self.dense_rank is not None:
            parts.append(f"dense #{self.dense_rank} {self.dense_score:.3f}")
        if self.lexical_rank is not None:
            parts.append(f"bm25 #{self.lexical_rank} {self.lexical_score:.2f}")
        if self.fused_score is not None:
            parts.append(f"rrf {self.fused_score:.4f}")
        if self.rerank_score is not None:
            parts.append(f"rerank {self.rerank_score:.3f}")
        return " · ".join(parts)


@dataclass(frozen=True)
class SearchResponse:
    query: str
    collection: str
    results: list[SearchResult]
    seconds: float
    mode: str = "dense"  # dense, hybrid, dense+rerank or hybrid+rerank
    # Seconds per stage: embed (the query's share of its request), dense, lexical, fuse, rerank.
    timings: dict[str, float] = field(default_factory=dict)

    def timing_summary(self) -> str:
        """Milliseconds per stage, e.g. "embed 12, dense 3, bm25 2, fuse 0, rerank 85"."""
        names = {"lexical": "bm25"}
        return ", ".join(f"{names.get(stage, stage)} {seconds * 1000:.0f}" for stage, seconds in self.timings.items())


RRF_K = 60  # reciprocal rank fusion's constant (Cormack et al. 2009), as Elasticsearch and OpenSearch use it


@dataclass
class _Candidate:
    """One passage as the stages see it."""

    chunk: StoredChunk  # the entry that found it first
    heading: str | None = None
    dense_rank: int | None = None
    dense_score: float | None = None
    lexical_rank: int | None = None
    lexical_score: float | None = None
    fused: float = 0.0
    rerank_score: float | None = None


# Seconds between checks that the lexical index holds what the store holds (a Searcher lives as long as
# the UI's session: other processes and machines may write meanwhile).
LEXICAL_RECHECK = 30.0


def _overfetch(k: int) -> int:
    """Entries to ask for k passages: a heading entry and its section's chunk are one passage."""
    return k + max(4, k // 2)


def _dense_candidates(hits: Sequence[StoredChunk]) -> dict[tuple[Any, ...], _Candidate]:
    """The dense hits as passages in rank order, each at its best entry (a heading entry or the chunk)."""
    out: dict[tuple[Any, ...], _Candidate] = {}
    for hit in hits:
        key = hit.meta.passage
        if key not in out:
            out[key] = _Candidate(hit, heading=hit.meta.heading, dense_rank=len(out) + 1,
                                  dense_score=round(1.0 - float(hit.distance or 0.0), 4))
    return out


class Searcher:
    """Holds one knowledge base and its query embedder, so repeated searches pay setup once."""

    def __init__(self, settings: Settings, kb: KnowledgeBase | None = None, embedder: Embedder | None = None,
                 reranker: Reranker | None = None, cache: QueryCache | None = None) -> None:
        """`cache`: query vectors shared with the process's other searchers (a long-running process passes one)."""
        self.settings = settings
        self.kb = kb or KnowledgeBase.open(settings)
        spec = self.kb.spec
        if spec is None:
            raise SearchError(
                f"collection {self.kb.name!r} is empty or does not exist: ingest documents first (kb ingest PATH)"
            )
        if settings.model and settings.model != spec.model:
            raise ConfigError(
                f"collection {self.kb.name!r} was built with model {spec.model!r}, not {settings.model!r}: "
                "queries must use the same model"
            )
        self.spec = spec
        if settings.dimensions and settings.dimensions != spec.dimension:
            raise ConfigError(
                f"collection {self.kb.name!r} holds {spec.dimension}-dimensional vectors, not {settings.dimensions}"
            )
        # Queries ask for the same Matryoshka dimension the documents were embedded with.
        query_settings = settings.model_copy(update={"dimensions": spec.requested_dimensions or None})
        self.embedder = embedder or make_embedder(query_settings, model=spec.model, instruction=spec.instruction)
        # Queries are formatted the way the collection's documents expect.
        self.embedder.instruction = Instruction(spec.instruction, spec.query_task)
        self.cache = cache
        self.profile = QueryProfile(self.embedder.model, spec.dimension, spec.requested_dimensions or 0,
                                    spec.instruction, spec.query_task)
        self.reranker = reranker or (make_reranker(settings) if settings.rerank_endpoint else None)
        self._lexical_checked = -LEXICAL_RECHECK  # monotonic time of the last sync_lexical
        self._main: tuple[KnowledgeBase, str | None] | None = None

    def _stages(self, mode: str | None, rerank: bool | None) -> tuple[str, bool]:
        mode = mode or self.settings.search_mode
        if mode not in ("dense", "hybrid"):
            raise ConfigError(f"search mode {mode!r} is not one of dense, hybrid")
        rerank = self.settings.rerank if rerank is None else rerank
        if rerank and self.reranker is None:
            raise ConfigError("reranking needs a rerank endpoint: --rerank-endpoint URL (or KB_RERANK_ENDPOINT)")
        if mode == "hybrid" and time.monotonic() - self._lexical_checked >= LEXICAL_RECHECK:
            self._fresh()  # level the index with the store this search will read
            if self.kb.lexical is None:
                raise StoreError("hybrid search needs the collection's lexical index, which this store handle lacks")
            # Level with the chunks: a collection from before kb kept one, or (a Chroma server) chunks that
            # ingest workers on other machines wrote. Two counts when nothing changed.
            self.kb.sync_lexical()
            self._lexical_checked = time.monotonic()
            self._main = None  # the main language is counted again over what the index now holds
        return mode, rerank

    async def asearch(self, query: str, k: int = 5, where: dict[str, Any] | None = None, *,
                      mode: str | None = None, rerank: bool | None = None) -> SearchResponse:
        """The k best passages for `query`; `mode` and `rerank` override the settings for this search."""
        if not query.strip():
            raise SearchError("the query is empty")
        if k < 1:
            raise SearchError("k must be at least 1")
        stages = self._stages(mode, rerank)
        started = time.perf_counter()
        vector = await self._query_vector(query)
        embedded = time.perf_counter() - started
        return await self._answer(query, vector, k, where, started, stages, embedded)

    async def _query_vector(self, query: str) -> Any:  # noqa: ANN401 - the embedder's array
        """The query's vector: from the cache when this text was asked under this collection's profile before."""
        if self.cache is not None and (kept := self.cache.get(self.profile, query)) is not None:
            return kept
        vector = (await self.embedder.embed([query], "query"))[0]
        if self.cache is not None:
            self.cache.put(self.profile, query, vector)
        return vector

    async def _answer(self, query: str, vector: Any, k: int, where: dict[str, Any] | None,  # noqa: ANN401
                      started: float, stages: tuple[str, bool], embedded: float) -> SearchResponse:
        mode, rerank = stages
        self._fresh()
        timings = {"embed": embedded}
        if mode == "dense" and not rerank:
            candidates = await self._dense_only(vector, k, where, timings)
        else:
            candidates = await self._fused(query, vector, max(k, self.settings.rerank_candidates if rerank else k),
                                           where, mode, timings)
            if rerank:  # the best rerank_candidates reordered; any further ones (k is larger) follow as fused
                head = self.settings.rerank_candidates
                candidates = await self._rerank(query, candidates[:head], timings) + candidates[head:]
        results = [self._result(rank, c, mode, rerank) for rank, c in enumerate(candidates[:k], 1)]
        label = mode + ("+rerank" if rerank else "")
        return SearchResponse(query, self.kb.name, results, time.perf_counter() - started, label, timings)

    async def _dense_only(self, vector: Any, k: int, where: dict[str, Any] | None,  # noqa: ANN401
                          timings: dict[str, float]) -> list[_Candidate]:
        # A heading entry and its section's chunk are one passage, kept once at its best score: a few more
        # than k are asked for, and more again in the rare case that was not enough.
        began = time.perf_counter()
        wanted = _overfetch(k)
        while True:
            hits = await asyncio.to_thread(self.kb.query, vector, wanted, where)
            candidates = list(_dense_candidates(hits).values())[:k]
            if len(candidates) == k or len(hits) < wanted:
                break
            wanted *= 2
        timings["dense"] = time.perf_counter() - began
        return candidates

    async def _fused(self, query: str, vector: Any, wanted: int, where: dict[str, Any] | None,  # noqa: ANN401
                     mode: str, timings: dict[str, float]) -> list[_Candidate]:
        """Dense candidates, and in hybrid mode BM25 candidates, fused by reciprocal rank at passage level."""
        depth = max(self.settings.candidates, _overfetch(wanted))
        began = time.perf_counter()
        hits = await asyncio.to_thread(self.kb.query, vector, depth, where)
        timings["dense"] = time.perf_counter() - began
        passages = _dense_candidates(hits)
        if mode == "hybrid":
            began = time.perf_counter()
            lexical = await asyncio.to_thread(self._lexical, query, depth, where, {h.id: h for h in hits})
            timings["lexical"] = time.perf_counter() - began
            for rank, (chunk, score) in enumerate(lexical, 1):
                key = chunk.meta.passage
                found = passages.get(key)
                if found is None:
                    passages[key] = found = _Candidate(chunk, heading=chunk.meta.heading)
                if found.lexical_rank is None:
                    found.lexical_rank, found.lexical_score = rank, round(score, 4)
        began = time.perf_counter()
        weight = self.settings.lexical_weight
        for c in passages.values():
            c.fused = (1.0 / (RRF_K + c.dense_rank) if c.dense_rank else 0.0) + (
                weight / (RRF_K + c.lexical_rank) if c.lexical_rank else 0.0)
        ordered = sorted(passages.values(), key=lambda c: (-c.fused, c.dense_rank or depth + 1))
        timings["fuse"] = time.perf_counter() - began
        return ordered[:wanted]

    def _lexical(self, query: str, depth: int, where: dict[str, Any] | None,
                 known: dict[str, Any]) -> list[tuple[Any, float]]:
        """BM25's best entries as stored chunks, best first. Entries the dense list did not bring are read
        from the store, which also applies `where` to them; entries whose chunk is gone are skipped."""
        index = self.kb.lexical
        assert index is not None
        language = None
        if self.settings.hybrid_gate == "majority":
            main = self._main_language()
            asked = query_language(query)
            if main is not None and asked not in (None, main):
                return []  # a question across languages: words they share (names, commands) are not evidence
            language = main
        hits = index.search(query, depth, language)
        unknown = [h.id for h in hits if h.id not in known]
        read = {c.id: c for c in self.kb.get(unknown, where)} if unknown else {}
        out = []
        for hit in hits:
            chunk = known.get(hit.id) or read.get(hit.id)
            if chunk is not None:
                out.append((chunk, hit.score))
        return out

    def _fresh(self) -> None:
        """Open the store again if another process wrote to it since (embedded): search what it wrote too."""
        if not self.kb.current():
            self.kb = KnowledgeBase.open(self.settings, self.kb.name)

    def _main_language(self) -> str | None:
        """The language most of the collection's passages are in (counted again at each lexical check)."""
        if self._main is None or self._main[0] is not self.kb:
            counts = self.kb.lexical.languages() if self.kb.lexical else {}
            self._main = (self.kb, main_language(counts.keys(), counts.values()))
        return self._main[1]

    async def _rerank(self, query: str, candidates: list[_Candidate], timings: dict[str, float]) -> list[_Candidate]:
        assert self.reranker is not None
        began = time.perf_counter()
        scores = await self.reranker.rerank(query, [c.chunk.text for c in candidates])
        timings["rerank"] = time.perf_counter() - began
        for c, score in zip(candidates, scores):
            c.rerank_score = round(score, 4)
        return sorted(candidates, key=lambda c: -(c.rerank_score or 0.0))

    @staticmethod
    def _result(rank: int, c: _Candidate, mode: str, rerank: bool) -> SearchResult:
        meta = c.chunk.meta
        if rerank:
            score = c.rerank_score or 0.0
        elif mode == "hybrid":
            score = round(c.fused, 6)
        else:
            score = c.dense_score or 0.0
        return SearchResult(
            rank=rank, score=score, text=c.chunk.text, source=meta.source, page=meta.page, chunk_id=c.chunk.id,
            title=meta.title, file_type=meta.file_type, start=meta.start, end=meta.end, language=meta.language,
            heading=c.heading, sheet=meta.sheet, chapter=meta.chapter, ocr=bool(meta.ocr),
            dense_rank=c.dense_rank, dense_score=c.dense_score, lexical_rank=c.lexical_rank,
            lexical_score=c.lexical_score, fused_score=round(c.fused, 6) if mode == "hybrid" else None,
            rerank_score=c.rerank_score,
        )

    def search_many(self, queries: Sequence[str], k: int = 5, where: dict[str, Any] | None = None,
                    batch: int = 64, *, mode: str | None = None, rerank: bool | None = None) -> list[SearchResponse]:
        """Many queries: embedded `batch` at a time (one request each), then searched one by one. Each
        response's `seconds` and timings["embed"] count its share of the embedding request."""
        if any(not q.strip() for q in queries):
            raise SearchError("a query is empty")
        stages = self._stages(mode, rerank)
        return asyncio.run(self._many(list(queries), k, where, batch, stages))

    async def _many(self, queries: list[str], k: int, where: dict[str, Any] | None, batch: int,
                    stages: tuple[str, bool]) -> list[SearchResponse]:
        responses = []
        try:
            for start in range(0, len(queries), batch):
                began = time.perf_counter()
                part = queries[start : start + batch]
                vectors = await self.embedder.embed(part, "query")
                share = (time.perf_counter() - began) / len(part)
                for query, vector in zip(part, vectors):
                    responses.append(await self._answer(query, vector, k, where, time.perf_counter() - share,
                                                        stages, share))
        finally:
            await self.aclose()
        return responses

    def search(self, query: str, k: int = 5, where: dict[str, Any] | None = None, *,
               mode: str | None = None, rerank: bool | None = None) -> SearchResponse:
        """Search from synchronous code; the Searcher stays usable for the next query."""
        return asyncio.run(self._once(query, k, where, mode, rerank))

    async def _once(self, query: str, k: int, where: dict[str, Any] | None, mode: str | None,
                    rerank: bool | None) -> SearchResponse:
        try:
            return await self.asearch(query, k, where, mode=mode, rerank=rerank)
        finally:
            await self.aclose()  # this loop ends here; the next call opens its own connections

    async def aclose(self) -> None:
        await self.embedder.aclose()
        if self.reranker is not None:
            await self.reranker.aclose()

    def neighbours(self, result: SearchResult, around: int = 1) -> list[str]:
        """The result's chunk with the chunks just before and after it in reading order (page, then position)."""
        chunks = self.kb.chunks_of(result.source)
        found = next((c for c in chunks if c.id == result.chunk_id), None)
        if found is None:
            return []
        # A heading entry's place is its section's chunk; the entries themselves are not passages in order.
        place = found.meta.passage
        ordered = sorted((c for c in chunks if not c.meta.is_heading), key=lambda c: (c.meta.page or 0, c.meta.chunk))
        position = next((i for i, c in enumerate(ordered) if c.meta.passage == place), None)
        if position is None:
            return []
        return [c.text for c in ordered[max(0, position - around) : position + around + 1]]


def as_result(chunk: StoredChunk, rank: int = 0, score: float = 0.0) -> SearchResult:
    """A stored chunk as a result (where it is, what it says), for a passage asked for by id."""
    meta = chunk.meta
    return SearchResult(rank=rank, score=score, text=chunk.text, source=meta.source, page=meta.page,
                        chunk_id=chunk.id, title=meta.title, file_type=meta.file_type, start=meta.start,
                        end=meta.end, language=meta.language, heading=meta.heading, sheet=meta.sheet,
                        chapter=meta.chapter, ocr=bool(meta.ocr))


def parse_where(text: str | None) -> dict[str, Any] | None:
    """`--where`: a Chroma metadata filter as JSON (keys: ingest.records.ChunkMetadata's), or None."""
    if not text:
        return None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"--where is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise ConfigError('--where must be a JSON object, e.g. {"file_type": "pdf"}')
    check_where(value)
    return value


_OPERATORS = {"$eq", "$ne", "$gt", "$gte", "$lt", "$lte", "$in", "$nin"}


def check_where(where: dict[str, Any]) -> None:
    """Refuse a metadata filter Chroma would refuse, saying why, before it reaches the store (which answers
    only "Invalid where clause"): {field: value}, {field: {"$op": value}}, {"$and" | "$or": [filters]}."""
    if not isinstance(where, dict) or len(where) != 1:
        raise ConfigError(f"a where filter is an object with one key (a field, $and or $or): {where!r}")
    [(key, value)] = where.items()
    if key in ("$and", "$or"):
        if not isinstance(value, list) or len(value) < 2:
            raise ConfigError(f"{key} takes a list of two filters or more: {value!r}")
        for each in value:
            check_where(each)
    elif key.startswith("$"):
        raise ConfigError(f"{key} is not a filter: use a metadata field, $and or $or")
    elif isinstance(value, dict):
        if len(value) != 1 or next(iter(value)) not in _OPERATORS:
            raise ConfigError(f"the filter on {key!r} takes one of {', '.join(sorted(_OPERATORS))}: {value!r}")
        [(operator, operand)] = value.items()
        if operator in ("$in", "$nin") and not isinstance(operand, list):
            raise ConfigError(f"{operator} on {key!r} takes a list: {operand!r}")
    elif not isinstance(value, (str, int, float, bool)):
        raise ConfigError(f"the filter on {key!r} compares with a string, number or boolean: {value!r}")


def search(query: str, settings: Settings, k: int = 5, where: dict[str, Any] | None = None) -> SearchResponse:
    """One search with the settings' knowledge base, in the settings' mode."""
    return Searcher(settings).search(query, k, where)
