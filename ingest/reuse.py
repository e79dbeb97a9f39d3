"""Chunk-level reuse: a chunk whose model input the collection already holds takes the stored vector.

Every stored entry records `records.input_key` of what was embedded (model, requested dimension, instruction
profile, the text as sent). Before a file's chunks are queued for the embedder, their keys are looked up in the
store; the unchanged sections of an edited file, a copy under another name, a paragraph another file shares are
not embedded again. A collection holds one model, dimension and instruction, and the key carries them too, so
nothing is reused across them. Within a run, the vectors just embedded are kept a while (`RECENT_BYTES`), and a
chunk whose input an earlier file of the run had takes its vector: the store is not asked for what it may not
hold yet (and a new store is not asked at all).
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from typing import TYPE_CHECKING

import numpy as np

from .backlog import InFlight
from .errors import StoreError
from .records import input_key

# The run's latest vectors kept for chunks that repeat them (a licence, a footer, a copied section): the
# nearer copies; farther ones come from the store.
RECENT_BYTES = 64 * 1024 * 1024

if TYPE_CHECKING:
    from .embeddings import Embedder
    from .knowledge_base import KnowledgeBase
    from .store_process import StoreProcess


class VectorReuse:
    """One run's lookups in its store. Off (`enabled` False) when re-indexing (--force) or when the collection
    has no documents yet: it has no vectors to give, and its files then ask the store nothing."""

    def __init__(self, embedder: Embedder) -> None:
        self.embedder = embedder
        self.kb: KnowledgeBase | StoreProcess | None = None
        self.enabled = False
        self._lookups = asyncio.Lock()  # one at a time: reads side by side only slow each other (and the writes)
        self._recent: OrderedDict[str, np.ndarray] = OrderedDict()
        self._recent_bytes = 0

    def key(self, text: str) -> str:
        """`records.input_key` of a chunk as this run's embedder sends it."""
        embedder = self.embedder
        return input_key(embedder.model, getattr(embedder, "dimensions", None) or 0, embedder.instruction.name,
                         embedder.instruction.document(text))

    def remember(self, key: str, vector: np.ndarray) -> None:
        """A vector the model just gave this run, for later chunks with the same input (the oldest go)."""
        if key in self._recent:
            self._recent.move_to_end(key)
            return
        self._recent[key] = vector
        self._recent_bytes += vector.nbytes
        while self._recent_bytes > RECENT_BYTES:
            _, old = self._recent.popitem(last=False)
            self._recent_bytes -= old.nbytes

    async def take(self, item: InFlight) -> int:
        """Fill in the vectors of the file's chunks whose inputs this run embedded lately or the collection
        holds, marking them ready for the writer; the tokens of those chunks (0 when none was reused)."""
        if not item.pieces:
            return 0
        recent = {key: self._recent[key] for key in item.keys if key in self._recent}
        for key in recent:
            self._recent.move_to_end(key)
        tokens = self._fill(item, recent)
        if not self.enabled or self.kb is None or not item.remaining:
            return tokens
        missing = [key for key, vector in zip(item.keys, item.vectors) if vector is None]
        try:
            async with self._lookups:
                found = await asyncio.to_thread(self.kb.vectors_for, missing)
        except StoreError:  # reuse saves work, nothing more: the chunks are embedded as they would have been
            return tokens
        return tokens + self._fill(item, found)

    def _fill(self, item: InFlight, found: dict[str, np.ndarray]) -> int:
        tokens = 0
        for index, key in enumerate(item.keys):
            vector = found.get(key)
            if vector is None or item.vectors[index] is not None:
                continue
            if self.embedder.dimension is None:
                # A run that embeds nothing still writes vectors of the collection's dimension; an answer of
                # another dimension later is refused, as any answer that does not match would be.
                self.embedder.dimension = vector.shape[0]
            if vector.shape[0] == self.embedder.dimension:
                item.vectors[index] = vector
                item.remaining -= 1
                item.ready.append(index)
                item.reused += 1
                tokens += item.pieces[index][1].tokens
        return tokens


class Twins:
    """Chunks of one run whose model input (`records.input_key`) an earlier chunk of the run is on its way to
    the server with: they wait for that answer instead of sending the same text again."""

    def __init__(self) -> None:
        self._waiting: dict[str, list[tuple[InFlight, int]]] = {}  # an input sent -> the chunks waiting for it

    def send(self, item: InFlight, index: int) -> bool:
        """Whether this chunk goes to the server (no other chunk with its input is on its way), or waits."""
        key = item.keys[index]
        if key in self._waiting:
            self._waiting[key].append((item, index))
            return False
        self._waiting[key] = []
        return True

    def needed(self, item: InFlight, index: int) -> bool:
        """A chunk of a failed file is still sent when others, of files that have not failed, wait for it;
        when none do, a later chunk with its input is sent itself."""
        if any(not twin.failed for twin, _ in self._waiting.get(item.keys[index], ())):
            return True
        self._waiting.pop(item.keys[index], None)
        return False

    def answered(self, item: InFlight, index: int) -> list[tuple[InFlight, int]]:
        """The chunks that were waiting for this chunk's answer (they take its vector, or its failure)."""
        return self._waiting.pop(item.keys[index], [])

    def with_waiting(self, batch: list[tuple[InFlight, int]]) -> list[tuple[InFlight, int]]:
        """`batch` and the chunks that were waiting for its answers (which fail with it, for the same reason)."""
        return batch + [twin for item, index in batch for twin in self.answered(item, index)]
