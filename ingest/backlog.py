"""Files in flight through a run, and the bounded backlog of their writes waiting for the store."""

from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import dataclass, field

import numpy as np

from .chunking import Chunk
from .documents import Document, LoadedFile


@dataclass
class InFlight:
    """A file whose chunks are being embedded."""

    loaded: LoadedFile
    pieces: list[tuple[Document, Chunk]]
    vectors: list[np.ndarray | None]  # each dropped once written
    remaining: int
    failed: str | None = None
    ready: list[int] = field(default_factory=list)  # back from the server, not yet handed to the writer
    stored: list[str] = field(default_factory=list)  # ids of parts sent to the store (written, or maybe half)
    keys: list[str] = field(default_factory=list)  # each chunk's `records.input_key`
    reused: int = 0  # chunks whose vectors came from the store


@dataclass
class Write:
    """Vectors back from the server, for the writer: chunks `indices` of one file, and with `final` the
    file's last ones and its record."""

    item: InFlight
    indices: list[int]
    final: bool


class Backlog:
    """Writes waiting for the writer, bounded in chunks: a store that falls behind holds the embedder
    back instead of letting vectors pile up in memory. Counted in chunks, not files: one PDF can bring
    thousands, and a big file comes in parts. Chunks count until they are
    stored, so the write in progress is inside the bound too. Writes enter in the order they were
    offered: a file's small last write never overtakes its bigger part still waiting for room."""

    def __init__(self, limit: int) -> None:
        self.limit, self.chunks = limit, 0
        self.items: deque[Write | None] = deque()
        self.changed = asyncio.Condition()
        self.offered = self.admitted = 0  # tickets: first come, first in

    @staticmethod
    def _size(item: Write | None) -> int:
        return len(item.indices) if item else 0  # None, the end mark, takes no room

    async def put(self, item: Write | None) -> None:
        """Queue a write (None: the end mark) once there is room for it and every write offered before it."""
        size = self._size(item)
        ticket, self.offered = self.offered, self.offered + 1  # taken before the first await
        async with self.changed:
            await self.changed.wait_for(lambda: self.admitted == ticket
                                        and (self.chunks == 0 or self.chunks + size <= self.limit))
            self.admitted += 1
            self.chunks += size
            self.items.append(item)
            self.changed.notify_all()

    async def take(self) -> list[Write | None]:
        """The oldest file, and those after it up to half the bound (files completed meanwhile share the
        same Chroma calls, whose CPU cost hardly depends on their size)."""
        async with self.changed:
            await self.changed.wait_for(lambda: self.items)
            taken, size = [self.items.popleft()], 0
            while self.items and size + self._size(self.items[0]) <= self.limit // 2:
                size += self._size(self.items[0])
                taken.append(self.items.popleft())
            return taken

    async def stored(self, items: list[Write]) -> None:
        """Free the room of writes the store has taken."""
        async with self.changed:
            self.chunks -= sum(self._size(item) for item in items)
            self.changed.notify_all()
