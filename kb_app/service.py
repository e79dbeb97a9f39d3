"""The knowledge base as a long-running server holds it: one facade over kb's library that the REST API, Dify's
external knowledge API and the MCP server all call, so none of them has logic of its own.

Searchers (the store handle and the query embedder, slow to build) are kept per collection and shared by
threads: every call here is synchronous and safe to run in a worker thread, which is where the servers run them,
off their event loop; searches of one collection take their turn at its searcher. Writes (uploads, deletions)
take the store's write lock as `kb ingest` does; searches see them through the store's generation marks.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from ingest.errors import SearchError
from ingest.knowledge_base import KnowledgeBase
from ingest.manage import delete_documents, status
from ingest.pipeline import ingest
from ingest.report import IngestReport
from ingest.settings import Settings
from kb_app.search import Searcher, SearchResponse, as_result


@dataclass(frozen=True)
class Passage:
    """One stored chunk, with the chunks around it in reading order, for an agent that cites it."""

    chunk_id: str
    text: str
    source: str
    title: str
    page: int | None
    heading: str | None
    location: str
    neighbours: list[str]  # the chunk's text with `around` chunks before and after it, in order


class KnowledgeService:
    """What a server does with a store: list collections, search, read a passage, add and remove files."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._searchers: dict[str, Searcher] = {}
        # A Searcher runs each search on an event loop of its own, and its embedder's asyncio lock binds to the
        # loop that used it first: one search at a time per searcher (the local model takes every core anyway).
        self._in_use: dict[str, threading.Lock] = {}
        self._lock = threading.Lock()

    def settings_for(self, collection: str | None) -> Settings:
        """The settings with `collection` (None: the configured one)."""
        if not collection or collection == self.settings.collection:
            return self.settings
        return self.settings.model_copy(update={"collection": collection})

    def collections(self) -> list[dict[str, Any]]:
        """What `kb status --json` says: each collection's counts, model and chunking."""
        return status(self.settings)

    def exists(self, collection: str | None) -> bool:
        return KnowledgeBase.open(self.settings_for(collection)).spec is not None

    def searcher(self, collection: str | None = None) -> Searcher:
        """The collection's searcher, built once. Raises SearchError for a collection that does not exist."""
        name = collection or self.settings.collection
        with self._lock:
            found = self._searchers.get(name)
            if found is None:
                found = self._searchers[name] = Searcher(self.settings_for(name))
                self._in_use[name] = threading.Lock()
            return found

    def search(self, query: str, k: int = 5, collection: str | None = None, *, mode: str | None = None,
               where: dict[str, Any] | None = None, rerank: bool | None = None) -> SearchResponse:
        """The k best passages (kb's own search: dense or hybrid, reranked when asked)."""
        searcher = self.searcher(collection)
        with self._in_use[collection or self.settings.collection]:
            return searcher.search(query, k, where, mode=mode, rerank=rerank)

    def passage(self, chunk_id: str, around: int = 1, collection: str | None = None) -> Passage:
        """A stored chunk by id, with `around` chunks before and after it. Raises SearchError for an unknown id."""
        searcher = self.searcher(collection)
        with self._in_use[collection or self.settings.collection]:
            return self._passage(searcher, chunk_id, around)

    @staticmethod
    def _passage(searcher: Searcher, chunk_id: str, around: int) -> Passage:
        [found] = searcher.kb.get([chunk_id]) or [None]
        if found is None:
            raise SearchError(f"no passage {chunk_id!r} in collection {searcher.kb.name!r}")
        result = as_result(found)
        return Passage(found.id, found.text, result.source, result.title, result.page, result.heading,
                       result.location, searcher.neighbours(result, around) or [found.text])

    def ingest(self, paths: Sequence[str | Path], collection: str | None = None) -> IngestReport:
        """Ingest files as the UI does (the embedded store is this process's: writes go through its client)."""
        return ingest(paths, self.settings_for(collection), store_process=False)

    def delete(self, sources: Sequence[str], collection: str | None = None) -> tuple[dict[str, int], list[str]]:
        """Remove documents by source (or folder): chunks removed per document, and the sources that matched none."""
        return delete_documents(self.settings_for(collection), sources)
