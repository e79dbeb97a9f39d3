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

import json
from typing import Any, Sequence

import httpx

from ingest.errors import ConfigError, RerankError
from ingest.http import auth_headers, describe, raise_for_transient, response_message, retry_policy, v1_url
from ingest.settings import Settings

# What the retry policy sends again, and what is told as "gave up" when the retries run out.
RETRIED = (httpx.TransportError, httpx.HTTPStatusError, json.JSONDecodeError, UnicodeDecodeError)

QWEN3_PREFIX = (
    "<|im_start|>system\nJudge whether the Document meets the requirements based on the Query and the Instruct "
    'provided. Note that the answer can only be "yes" or "no".<|im_end|>\n<|im_start|>user\n'
)
QWEN3_SUFFIX = "<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"
QWEN3_TASK = "Given a web search query, retrieve relevant passages that answer the query"


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
        self.url = f"{v1_url(endpoint)}/{api}"
        self.model = model
        self.api = api
        self.max_retries = max_retries
        self.qwen3 = template == "qwen3"
        self.task = task
        self._backoff = (backoff_base, backoff_cap)
        self._headers = auth_headers(api_key)
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
        from tenacity import AsyncRetrying

        body = self._body(query, documents)
        retrying = AsyncRetrying(**retry_policy(self.max_retries, *self._backoff, on_retry=self._retried))
        try:
            answer = await retrying(self._post, body)
        except RETRIED as fault:
            attempts = retrying.statistics["attempt_number"]
            raise RerankError(f"{self.url}: gave up after {attempts} attempts: {describe(fault)}") from None
        return self._scores(answer, len(documents))

    def _retried(self) -> None:
        self.retries += 1

    async def _post(self, body: dict[str, Any]) -> Any:  # noqa: ANN401 - the server's JSON
        """One request: transient faults raise for the retry policy, a refusal raises RerankError."""
        if self._client is None:
            self._client = httpx.AsyncClient(timeout=self._timeout, headers=self._headers)
        self.requests += 1
        response = await self._client.post(self.url, json=body)
        raise_for_transient(response)
        if response.status_code >= 400:
            raise RerankError(f"{self.url}: HTTP {response.status_code}: {response_message(response)}")
        return response.json()

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
