"""The knowledge base as a long-running server holds it: one facade over kb's library that the REST API, Dify's
external knowledge API and the MCP server all call, so none of them has logic of its own.

Searchers (the store handle and the query embedder, slow to build) are kept per collection and shared by
threads: every call here is synchronous and safe to run in a worker thread, which is where the servers run them,
off their event loop and side by side, each with a searcher of its own from the collection's pool. Writes
(uploads, deletions) take the store's write lock as `kb ingest` does; searches see them through the store's
generation marks.
"""

from __future__ import annotations

import os
import queue
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

from ingest.errors import SearchError
from ingest.knowledge_base import KnowledgeBase
from ingest.manage import delete_documents, status
from ingest.metrics import Metrics
from ingest.query_cache import QueryCache
from ingest.report import IngestReport
from ingest.settings import Settings
from kb_app.answer import Retrieval, retrieve
from kb_app.chat import ChatModel
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

    def __init__(self, settings: Settings, parallel: int | None = None) -> None:
        self.settings = settings
        # Searchers per collection, each used by one thread at a time (a search runs on an event loop of its
        # own, and an embedder's connections belong to one loop): up to `parallel` searches of a collection
        # run side by side, the rest wait for a searcher to come back.
        self.parallel = parallel or min(os.cpu_count() or 1, 4)
        self._idle: dict[str, queue.SimpleQueue[Searcher]] = {}
        self._built: dict[str, int] = {}
        self._lock = threading.Lock()
        self._chat: ChatModel | None = None
        # The server's metrics (GET /metrics); the query cache's counts are read from it at each scrape.
        self.metrics = Metrics(serving=True, query_cache=lambda: self.query_cache)
        # Query vectors shared by every searcher built here: a question asked again is not embedded again.
        self.query_cache = QueryCache.from_settings(settings)

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

    @contextmanager
    def searcher(self, collection: str | None = None) -> Iterator[Searcher]:
        """A searcher of the collection for this thread alone, given back afterwards. Raises SearchError for
        a collection that does not exist."""
        name = collection or self.settings.collection
        with self._lock:
            idle = self._idle.setdefault(name, queue.SimpleQueue())
            build = idle.empty() and self._built.get(name, 0) < self.parallel
            if build:
                self._built[name] = self._built.get(name, 0) + 1
        if build:
            try:
                found = Searcher(self.settings_for(name), cache=self.query_cache)
            except BaseException:
                with self._lock:
                    self._built[name] -= 1
                raise
        else:
            found = idle.get()  # one will come back: `parallel` were built
        try:
            yield found
        finally:
            idle.put(found)

    def search(self, query: str, k: int = 5, collection: str | None = None, *, mode: str | None = None,
               where: dict[str, Any] | None = None, rerank: bool | None = None) -> SearchResponse:
        """The k best passages (kb's own search: dense or hybrid, reranked when asked)."""
        with self.metrics.searching() as searched, self.searcher(collection) as searcher:
            response = searcher.search(query, k, where, mode=mode, rerank=rerank)
            searched(response)
            return response

    def chat(self) -> ChatModel:
        """The chat model that writes answers (one client, shared by threads). Raises ConfigError when none is set."""
        with self._lock:
            if self._chat is None:
                self._chat = ChatModel.from_settings(self.settings)
            return self._chat

    def has_chat(self) -> bool:
        return bool(self.settings.chat_endpoint)

    def retrieve(self, question: str, collection: str | None = None, *, k: int = 6, mode: str | None = None,
                 rerank: bool | None = None, where: dict[str, Any] | None = None, chat_model: str | None = None,
                 answer_tokens: int | None = None) -> Retrieval:
        """Everything before the chat model writes an answer (kb_app.answer.retrieve): the searcher goes back to
        the pool before the answer streams, which takes far longer than the search."""
        self.metrics.answers.inc()

        def search(query: str, top: int) -> SearchResponse:
            with self.metrics.searching() as searched:
                response = searcher.search(query, top, where, mode=mode, rerank=rerank)
                searched(response)
                return response

        with self.searcher(collection) as searcher:
            return retrieve(question, search, searcher.spec.model, self.settings, k=k, chat_model=chat_model,
                            answer_tokens=answer_tokens)

    def passage(self, chunk_id: str, around: int = 1, collection: str | None = None) -> Passage:
        """A stored chunk by id, with `around` chunks before and after it. Raises SearchError for an unknown id."""
        with self.searcher(collection) as searcher:
            [found] = searcher.kb.get([chunk_id]) or [None]
            if found is None:
                raise SearchError(f"no passage {chunk_id!r} in collection {searcher.kb.name!r}")
            result = as_result(found)
            return Passage(found.id, found.text, result.source, result.title, result.page, result.heading,
                           result.location, searcher.neighbours(result, around) or [found.text])

    def ingest(self, paths: Sequence[str | Path], collection: str | None = None) -> IngestReport:
        """Ingest files as the UI does (the embedded store is this process's: writes go through its client)."""
        return self.metrics.ingest(paths, self.settings_for(collection), store_process=False)

    def delete(self, sources: Sequence[str], collection: str | None = None) -> tuple[dict[str, int], list[str]]:
        """Remove documents by source (or folder): chunks removed per document, and the sources that matched none."""
        return delete_documents(self.settings_for(collection), sources)
