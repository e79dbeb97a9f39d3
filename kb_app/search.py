"""Semantic, cross-lingual search over a knowledge base.

The query is embedded with the model and instruction the collection was built with (read from the
collection's metadata), so a Chinese question meets English passages in the same vector space.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import asdict, dataclass
from typing import Any, Sequence

from ingest.embeddings import Embedder, make_embedder
from ingest.errors import ConfigError, KbError
from ingest.instructions import Instruction
from ingest.settings import Settings
from ingest.store import KnowledgeBase


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

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class SearchResponse:
    query: str
    collection: str
    results: list[SearchResult]
    seconds: float


def passage_of(metadata: dict[str, Any]) -> tuple[Any, ...]:
    """Which passage a stored entry shows: its own chunk, or for a heading entry the chunk it stands for."""
    return (metadata.get("source"), metadata.get("sha256"), metadata.get("page"),
            metadata.get("section", metadata.get("chunk")))


class Searcher:
    """Holds one knowledge base and its query embedder, so repeated searches pay setup once."""

    def __init__(self, settings: Settings, kb: KnowledgeBase | None = None, embedder: Embedder | None = None) -> None:
        self.settings = settings
        self.kb = kb or KnowledgeBase.open(settings)
        spec = self.kb.spec
        if spec is None:
            raise KbError(
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

    async def asearch(self, query: str, k: int = 5, where: dict[str, Any] | None = None) -> SearchResponse:
        if not query.strip():
            raise KbError("the query is empty")
        if k < 1:
            raise KbError("k must be at least 1")
        started = time.perf_counter()
        vector = (await self.embedder.embed([query], "query"))[0]
        return await self._answer(query, vector, k, where, started)

    async def _answer(self, query: str, vector: Any, k: int, where: dict[str, Any] | None,  # noqa: ANN401
                      started: float) -> SearchResponse:
        if not self.kb.current():  # another process wrote to the store: search what it wrote too
            self.kb = KnowledgeBase.open(self.settings, self.kb.name)
        # A heading entry and its section's chunk are one passage, kept once at its best score: a few more
        # than k are asked for, and more again in the rare case that was not enough.
        wanted = k + max(4, k // 2)
        while True:
            hits = await asyncio.to_thread(self.kb.query, vector, wanted, where)
            results = self._passages(hits, k)
            if len(results) == k or len(hits) < wanted:
                break
            wanted *= 2
        return SearchResponse(query, self.kb.name, results, time.perf_counter() - started)

    @staticmethod
    def _passages(hits: Sequence[Any], k: int) -> list[SearchResult]:
        results: list[SearchResult] = []
        seen: set[tuple[Any, ...]] = set()
        for hit in hits:
            meta = hit.metadata
            passage = passage_of(meta)
            if passage in seen:
                continue
            seen.add(passage)
            results.append(SearchResult(
                rank=len(results) + 1,
                score=round(1.0 - float(hit.distance or 0.0), 4),
                text=hit.text,
                source=str(meta.get("source", "")),
                page=meta.get("page"),
                chunk_id=hit.id,
                title=str(meta.get("title", "")),
                file_type=str(meta.get("file_type", "")),
                start=meta.get("start"),
                end=meta.get("end"),
                language=meta.get("language"),
                heading=meta.get("heading"),
            ))
            if len(results) == k:
                break
        return results

    def search_many(self, queries: Sequence[str], k: int = 5, where: dict[str, Any] | None = None,
                    batch: int = 64) -> list[SearchResponse]:
        """Many queries: embedded `batch` at a time (one request each), then searched one by one."""
        if any(not q.strip() for q in queries):
            raise KbError("a query is empty")
        return asyncio.run(self._many(list(queries), k, where, batch))

    async def _many(self, queries: list[str], k: int, where: dict[str, Any] | None, batch: int) -> list[SearchResponse]:
        responses = []
        try:
            for start in range(0, len(queries), batch):
                began = time.perf_counter()
                part = queries[start : start + batch]
                vectors = await self.embedder.embed(part, "query")
                for query, vector in zip(part, vectors):
                    responses.append(await self._answer(query, vector, k, where, began))
        finally:
            await self.embedder.aclose()
        return responses

    def search(self, query: str, k: int = 5, where: dict[str, Any] | None = None) -> SearchResponse:
        """Search from synchronous code; the Searcher stays usable for the next query."""
        return asyncio.run(self._once(query, k, where))

    async def _once(self, query: str, k: int, where: dict[str, Any] | None) -> SearchResponse:
        try:
            return await self.asearch(query, k, where)
        finally:
            await self.embedder.aclose()  # this loop ends here; the next call opens its own connections

    def neighbours(self, result: SearchResult, around: int = 1) -> list[str]:
        """The result's chunk with the chunks just before and after it in reading order (page, then position)."""
        chunks = self.kb.chunks_of(result.source)
        found = next((c for c in chunks if c.id == result.chunk_id), None)
        if found is None:
            return []
        # A heading entry's place is its section's chunk; the entries themselves are not passages in order.
        place = passage_of(found.metadata)
        ordered = sorted(
            (c for c in chunks if "section" not in c.metadata),
            key=lambda c: (c.metadata.get("page") or 0, c.metadata.get("chunk", 0)),
        )
        position = next((i for i, c in enumerate(ordered) if passage_of(c.metadata) == place), None)
        if position is None:
            return []
        return [c.text for c in ordered[max(0, position - around) : position + around + 1]]


def search(query: str, settings: Settings, k: int = 5, where: dict[str, Any] | None = None) -> SearchResponse:
    """One search with the settings' knowledge base."""
    return Searcher(settings).search(query, k, where)
