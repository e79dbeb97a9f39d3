"""An ingest run's KnowledgeBase in a process of its own (see StoreProcess)."""

from __future__ import annotations

import time
from concurrent.futures.process import BrokenProcessPool
from typing import Any, Sequence

from .errors import StoreError
from .knowledge_base import DocumentWrite, KnowledgeBase, validate_name
from .processes import process_pool
from .records import CollectionSpec, DocumentRecord
from .settings import Settings
from .shards import Shard

# The store process's own knowledge base, opened at its first call (so an error reaches the caller).
_process_settings: Settings | None = None
_process_kb: KnowledgeBase | None = None


def _remember_settings(settings: Settings) -> None:
    global _process_settings
    _process_settings = settings


def _call_in_process(method: str, args: tuple) -> tuple[Any, float]:
    """Run one KnowledgeBase method in the store process; its result and the process's CPU seconds."""
    global _process_kb
    started = time.process_time()
    if _process_kb is None:
        assert _process_settings is not None
        _process_kb = KnowledgeBase.open(_process_settings, create=True)
    result = getattr(_process_kb, method)(*args)
    return result, time.process_time() - started


class StoreProcess:
    """A KnowledgeBase in a process of its own, with the methods an ingest run calls.

    Chroma's embedded client holds the GIL for the whole of every write (longer as its HNSW index
    grows): in the pipeline's process that freezes the event loop, and with it every request to the
    embedding servers. An embedded store must have one owner, so for the run this process is it;
    nothing else in the caller's process may have it open. `cpu` adds up the process's CPU seconds,
    Chroma's native threads included.
    """

    def __init__(self, settings: Settings) -> None:
        validate_name(settings.collection)
        self.name = settings.collection
        self.cpu = 0.0
        self._pool = process_pool("kb-store", 1, _remember_settings, (settings,))

    def _call(self, method: str, *args: Any) -> Any:  # noqa: ANN401 - the method's own result
        try:
            result, cpu = self._pool.submit(_call_in_process, method, args).result()
        except BrokenProcessPool:
            raise StoreError(f"the store process for collection {self.name!r} died (out of memory?)") from None
        self.cpu += cpu
        return result

    def documents(self) -> dict[str, DocumentRecord]:
        return self._call("documents")

    def check_model(self, model: str, dimension: int | None = None, instruction: str | None = None) -> None:
        self._call("check_model", model, dimension, instruction)

    def ensure(self, spec: CollectionSpec) -> None:
        self._call("ensure", spec)

    def write_documents(self, writes: Sequence[DocumentWrite]) -> None:
        self._call("write_documents", list(writes))

    def delete_document(self, source: str) -> int:
        return self._call("delete_document", source)

    def delete_chunks(self, ids: Sequence[str]) -> None:
        self._call("delete_chunks", list(ids))

    def delete_orphans(self, shard: Shard | None = None) -> dict[str, int]:
        return self._call("delete_orphans", shard)

    def sync_lexical(self) -> dict[str, int]:
        return self._call("sync_lexical")

    def close(self) -> None:
        self._pool.shutdown(wait=True)
