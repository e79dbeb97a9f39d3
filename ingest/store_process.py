"""An ingest run's KnowledgeBase in a process of its own (see StoreProcess)."""

from __future__ import annotations

import time
from concurrent.futures.process import BrokenProcessPool
from typing import Any, Sequence

import numpy as np

from .errors import StoreError
from .knowledge_base import DocumentWrite, KnowledgeBase, validate_name
from .processes import process_pool
from .records import CollectionSpec, DocumentRecord
from .settings import Settings
from .shards import Shard

# The store process's own knowledge base, opened as soon as the process is up; if that fails, again at its
# first call (so the error reaches the caller).
_process_settings: Settings | None = None
_process_kb: KnowledgeBase | None = None
_unreported_cpu = 0.0  # CPU seconds of the early opening, reported with the first call's


def _remember_settings(settings: Settings) -> None:
    global _process_settings
    _process_settings = settings


def _open_early() -> None:
    """Open the knowledge base the moment the process is up (importing Chroma and opening the store take a
    second or so), while the pipeline hashes files and loads its tokenizer."""
    global _process_kb, _unreported_cpu
    started = time.process_time()
    assert _process_settings is not None
    try:
        _process_kb = KnowledgeBase.open(_process_settings, create=True)
    except Exception:  # noqa: BLE001 - the first call opens it again and raises the error to the caller
        pass
    _unreported_cpu += time.process_time() - started


def _call_in_process(method: str, args: tuple) -> tuple[Any, float]:
    """Run one KnowledgeBase method in the store process; its result and the process's CPU seconds."""
    global _process_kb, _unreported_cpu
    started = time.process_time()
    if _process_kb is None:
        assert _process_settings is not None
        _process_kb = KnowledgeBase.open(_process_settings, create=True)
    result = getattr(_process_kb, method)(*args)
    cpu, _unreported_cpu = time.process_time() - started + _unreported_cpu, 0.0
    return result, cpu


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
        # Spawns the process now, before the caller's next steps rather than at its first call. The caller
        # holds the store's write lock already (the process opens the store, and reads what it holds).
        self._pool.submit(_open_early)

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

    def vectors_for(self, keys: Sequence[str]) -> dict[str, np.ndarray]:
        return self._call("vectors_for", list(keys))

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
