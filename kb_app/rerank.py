"""Reranking: a cross-encoder (Qwen3-Reranker, bge-reranker, ...) served behind a rerank API reorders the
best passages of a search.

Two request shapes cover the servers kb meets:
- `rerank`: POST {endpoint}/rerank with {model, query, documents, top_n}; vLLM (`/rerank`, `/v1/rerank`),
  Cohere and Jina answer {"results": [{"index", "relevance_score"}, ...]}, SGLang's `/v1/rerank` a bare list
  of {"index", "score"}.
- `score`: vLLM's POST {endpoint}/score with {model, text_1: query, text_2: documents}, answering
  {"data": [{"index", "score"}, ...]}.
An endpoint without a version path gets `/v1`, as for embeddings.

Qwen3-Reranker is a causal LM asked "yes" or "no" (served, as vLLM and SGLang document it, as a sequence
classifier from the "no"/"yes" tokens) and expects its prompt around the query and each document. Servers
started with its chat template (vLLM, SGLang `--chat-template ...qwen3_reranker.jinja`) apply it themselves:
kb sends plain text (`template="none"`). For a server without the template, `template="qwen3"` has kb wrap
the texts instead.
"""

from __future__ import annotations

from typing import Any, Sequence

import httpx

from ingest.embeddings import _v1, backoff, body_message, retry_after
from ingest.errors import ConfigError, KbError
from ingest.settings import Settings

QWEN3_PREFIX = (
    "<|im_start|>system\nJudge whether the Document meets the requirements based on the Query and the Instruct "
    'provided. Note that the answer can only be "yes" or "no".<|im_end|>\n<|im_start|>user\n'
)
QWEN3_SUFFIX = "<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"
QWEN3_TASK = "Given a web search query, retrieve relevant passages that answer the query"


class RerankError(KbError):
    """The rerank endpoint failed for good (after retries), or answered something that is not a ranking."""


class Reranker:
    """Scores (query, passage) pairs on one rerank endpoint; transient faults (429, 5xx, timeouts, dropped
    connections) are retried with backoff, honouring Retry-After."""

    def __init__(self, endpoint: str, model: str, *, api: str = "rerank", api_key: str | None = None,
                 timeout: float = 60.0, max_retries: int = 4, template: str = "none",
                 task: str = QWEN3_TASK, backoff_base: float = 0.5, backoff_cap: float = 20.0) -> None:
        if api not in ("rerank", "score"):
            raise ConfigError(f"rerank API {api!r} is not one of rerank, score")
        if template not in ("none", "qwen3"):
            raise ConfigError(f"rerank template {template!r} is not one of none, qwen3")
        self.url = f"{_v1(endpoint.rstrip('/'))}/{api}"
        self.model = model
        self.api = api
        self.max_retries = max_retries
        self.qwen3 = template == "qwen3"
        self.task = task
        self._backoff = (backoff_base, backoff_cap)
        self._headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._timeout = timeout
        self._client: httpx.AsyncClient | None = None
        self.requests = 0
        self.retries = 0

    def _body(self, query: str, documents: Sequence[str]) -> dict[str, Any]:
        if self.qwen3:
            query = f"{QWEN3_PREFIX}<Instruct>: {self.task}\n<Query>: {query}\n"
            documents = [f"<Document>: {d}{QWEN3_SUFFIX}" for d in documents]
        if self.api == "score":
            return {"model": self.model, "text_1": query, "text_2": list(documents)}
        return {"model": self.model, "query": query, "documents": list(documents), "top_n": len(documents)}

    async def rerank(self, query: str, documents: Sequence[str]) -> list[float]:
        """A relevance score for each document, in the order given (higher is more relevant)."""
        if not documents:
            return []
        from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_attempt

        body = self._body(query, documents)
        attempts = 0
        try:
            async for attempt in AsyncRetrying(retry=retry_if_exception_type(_Transient), wait=self._wait,
                                               stop=stop_after_attempt(self.max_retries + 1), reraise=True):
                with attempt:
                    self.retries += bool(attempts)
                    attempts += 1
                    return self._scores(await self._post(body), len(documents))
        except _Transient as fault:
            raise RerankError(f"{self.url}: gave up after {attempts} attempts: {fault}") from None
        raise AssertionError("unreachable")  # pragma: no cover

    def _wait(self, retry_state) -> float:  # noqa: ANN001 - tenacity's RetryCallState
        """Exponential backoff with jitter, as the embedder's; a server's Retry-After is a floor."""
        delay = backoff(retry_state.attempt_number - 1, *self._backoff)
        fault = retry_state.outcome.exception() if retry_state.outcome else None
        asked = getattr(fault, "retry_after", None)
        return max(delay, min(asked, self._backoff[1])) if asked is not None else delay

    async def _post(self, body: dict[str, Any]) -> Any:  # noqa: ANN401
        if self._client is None:
            self._client = httpx.AsyncClient(timeout=self._timeout, headers=self._headers)
        self.requests += 1
        try:
            response = await self._client.post(self.url, json=body)
        except httpx.TimeoutException:
            raise _Transient("timed out (raise --timeout)") from None
        except httpx.TransportError as exc:
            raise _Transient(f"connection failed ({exc or type(exc).__name__})") from None
        if response.status_code in (408, 409, 425, 429) or response.status_code >= 500:
            raise _Transient(f"HTTP {response.status_code}: {_message(response)}", retry_after(response.headers))
        if response.status_code >= 400:
            raise RerankError(f"{self.url}: HTTP {response.status_code}: {_message(response)}")
        try:
            return response.json()
        except ValueError:
            raise _Transient("the answer is not JSON") from None

    def _scores(self, answer: Any, n: int) -> list[float]:  # noqa: ANN401
        items = answer
        if isinstance(answer, dict):
            items = answer.get("results", answer.get("data"))
        if not isinstance(items, list):
            raise RerankError(f"{self.url}: the answer has no results list: {str(answer)[:200]}")
        scores: list[float | None] = [None] * n
        for item in items:
            try:
                index = int(item["index"])
                value = item.get("relevance_score", item.get("score"))
                scores[index] = float(value)
            except (KeyError, TypeError, ValueError, IndexError):
                raise RerankError(f"{self.url}: a result is not {{index, score}}: {str(item)[:200]}") from None
        missing = [i for i, s in enumerate(scores) if s is None]
        if missing:
            raise RerankError(f"{self.url}: no score for {len(missing)} of the {n} passages sent")
        return [float(s) for s in scores]  # type: ignore[arg-type]

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None


class _Transient(Exception):
    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


def _message(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:300] or response.reason_phrase
    return (body_message(body) or str(body))[:300]


def make_reranker(settings: Settings) -> Reranker:
    if not settings.rerank_endpoint:
        raise ConfigError("reranking needs a rerank endpoint: --rerank-endpoint URL (or KB_RERANK_ENDPOINT)")
    if not settings.rerank_model:
        raise ConfigError("with --rerank-endpoint, name the served reranker with --rerank-model (or KB_RERANK_MODEL)")
    return Reranker(
        settings.rerank_endpoint, settings.rerank_model, api=settings.rerank_api,
        api_key=settings.rerank_api_key.get_secret_value() if settings.rerank_api_key else None,
        timeout=settings.timeout, max_retries=settings.max_retries, template=settings.rerank_template,
    )
