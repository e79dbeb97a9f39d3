"""Chunk-level reuse: a chunk whose model input the collection already holds takes the stored vector.

Every stored entry records `records.input_key` of what was embedded (model, requested dimension, instruction
profile, the text as sent). Before a file's chunks are queued for the embedder, their keys are looked up in the
store; the unchanged sections of an edited file, a copy under another name, a paragraph another file shares are
not embedded again. A collection holds one model, dimension and instruction, and the key carries them too, so
nothing is reused across them.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from .backlog import InFlight
from .errors import StoreError
from .records import input_key

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

    def key(self, text: str) -> str:
        """`records.input_key` of a chunk as this run's embedder sends it."""
        embedder = self.embedder
        return input_key(embedder.model, getattr(embedder, "dimensions", None) or 0, embedder.instruction.name,
                         embedder.instruction.document(text))

    async def take(self, item: InFlight) -> int:
        """Fill in the stored vectors of the file's chunks whose keys the collection holds, marking them ready
        for the writer; the tokens of those chunks (0 when none was reused)."""
        if not self.enabled or self.kb is None or not item.pieces:
            return 0
        try:
            async with self._lookups:
                found = await asyncio.to_thread(self.kb.vectors_for, item.keys)
        except StoreError:  # reuse saves work, nothing more: the chunks are embedded as they would have been
            return 0
        tokens = 0
        for index, key in enumerate(item.keys):
            vector = found.get(key)
            if vector is not None and self.embedder.dimension is None:
                # A run that embeds nothing still writes vectors of the collection's dimension; an answer of
                # another dimension later is refused, as any answer that does not match would be.
                self.embedder.dimension = vector.shape[0]
            if vector is not None and vector.shape[0] == self.embedder.dimension:
                item.vectors[index] = vector
                item.remaining -= 1
                item.ready.append(index)
                item.reused += 1
                tokens += item.pieces[index][1].tokens
        return tokens
