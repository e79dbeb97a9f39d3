"""The query-embedding cache of a long-running process (the UI, `kb serve`): a repeated question is not embedded
again.

An LRU bounded by entries and by bytes, shared by the process's searchers and their threads. A vector is kept
under everything that shapes it: the model, the dimension (as stored and as requested), the instruction profile
(its name and query task) and the exact query text, so no vector is ever served to a collection built another
way. A hit returns the very array the embedder gave, marked read-only so no caller can change it for the next.

Hand-written over an OrderedDict: cachetools' LRUCache bounds one size only (entries or a getsizeof sum) and is
not installed here; the two bounds, a lock and the counts are what this class adds either way.
"""

from __future__ import annotations

import sys
import threading
from collections import OrderedDict
from typing import NamedTuple

import numpy as np

from .errors import ConfigError
from .settings import Settings


class QueryProfile(NamedTuple):
    """What, besides its text, decides a query's vector: the collection's model, dimension and instruction."""

    model: str
    dimension: int
    requested_dimensions: int  # the Matryoshka dimension sent with the request, 0 for none
    instruction: str
    query_task: str


class QueryCache:
    """Query vectors by (profile, text), least recently used out first; thread-safe. A bound of 0 turns it off
    (every lookup is a miss and nothing is kept)."""

    def __init__(self, max_entries: int, max_bytes: int) -> None:
        if max_entries < 0 or max_bytes < 0:
            raise ConfigError(f"query cache bounds must be 0 or more, not {max_entries} entries, {max_bytes} bytes")
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.hits = 0
        self.misses = 0
        self.bytes = 0  # the kept vectors' bytes plus their texts' (a profile's strings are shared by its entries)
        self._kept: OrderedDict[tuple[QueryProfile, str], tuple[np.ndarray, int]] = OrderedDict()
        self._lock = threading.Lock()

    @classmethod
    def from_settings(cls, settings: Settings) -> QueryCache:
        return cls(settings.query_cache_entries, int(settings.query_cache_mb * 1024 * 1024))

    @property
    def entries(self) -> int:
        return len(self)

    def __len__(self) -> int:
        with self._lock:
            return len(self._kept)

    def get(self, profile: QueryProfile, text: str) -> np.ndarray | None:
        """The vector kept for this text under this profile (now the most recently used), or None; counted."""
        with self._lock:
            found = self._kept.get((profile, text))
            if found is None:
                self.misses += 1
                return None
            self._kept.move_to_end((profile, text))
            self.hits += 1
            return found[0]

    def put(self, profile: QueryProfile, text: str, vector: np.ndarray) -> None:
        """Keep the embedder's vector, dropping the least recently used until both bounds hold. A vector larger
        than the byte bound alone is not kept."""
        size = vector.nbytes + sys.getsizeof(text)
        if size > self.max_bytes or self.max_entries == 0:
            return
        vector.flags.writeable = False  # the same array is handed to every later search of this text
        key = (profile, text)
        with self._lock:
            old = self._kept.pop(key, None)
            if old is not None:
                self.bytes -= old[1]
            self._kept[key] = (vector, size)
            self.bytes += size
            while len(self._kept) > self.max_entries or self.bytes > self.max_bytes:
                _, (_, dropped) = self._kept.popitem(last=False)
                self.bytes -= dropped

    def clear(self) -> None:
        with self._lock:
            self._kept.clear()
            self.bytes = 0
