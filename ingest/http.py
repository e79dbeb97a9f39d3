"""What every kb client of an HTTP model server shares: the `/v1` base URL, the bearer header, which
failures are worth sending again, the server's own words for an error, and kb's one retry policy.

The policy (tenacity) is exponential backoff with full jitter, with a server's Retry-After as a floor; it
retries timeouts, dropped or refused connections, answers that are not JSON, and the transient statuses
(408, 409, 425, 429 and every 5xx). The embedders, the reranker, the tokenizer probe and the UI's
health check all use it.
"""

from __future__ import annotations

import errno
import json
import math
import os
import random
import re
import socket
import sys
from typing import Any, Callable

import httpx

# Statuses worth sending the request again for, besides every 5xx: a timeout, a conflict, "too early",
# and rate limiting.
TRANSIENT_STATUSES = frozenset({408, 409, 425, 429})


def v1_url(url: str) -> str:
    """The base URL with its version path: `http://host:port` becomes `http://host:port/v1`; a URL that
    ends in a version (`/v1`, `/v2`) keeps it."""
    url = url.rstrip("/")
    return url if re.search(r"/v\d+$", url) else f"{url}/v1"


def server_root(url: str) -> str:
    """The server's URL without the version path: routes such as vLLM's `/tokenize` sit beside `/v1`."""
    return re.sub(r"/v\d+$", "", url.rstrip("/"))


def auth_headers(api_key: str | None) -> dict[str, str]:
    """The bearer header for an API key; no header without one."""
    return {"Authorization": f"Bearer {api_key}"} if api_key else {}


def is_transient_status(status: int) -> bool:
    return status in TRANSIENT_STATUSES or status >= 500


def raise_for_transient(response: httpx.Response) -> None:
    """Raise httpx.HTTPStatusError for a transient status, so the retry policy sends the request again."""
    if is_transient_status(response.status_code):
        raise httpx.HTTPStatusError(f"HTTP {response.status_code}", request=response.request, response=response)


def is_transient(error: BaseException) -> bool:
    """Whether sending the request again may succeed: a timeout, a dropped or refused connection, a body
    that is not JSON or not even text (a proxy's error page, a truncated answer), or a transient status. Knows httpx's
    exceptions and the openai client's."""
    if isinstance(error, (httpx.TransportError, json.JSONDecodeError, UnicodeDecodeError)):
        return True
    if isinstance(error, httpx.HTTPStatusError):
        return is_transient_status(error.response.status_code)
    openai = sys.modules.get("openai")  # an openai error exists only once the client is imported
    if openai is not None:
        if isinstance(error, openai.APIConnectionError):  # timeouts included
            return True
        if isinstance(error, openai.APIStatusError):
            return is_transient_status(error.status_code)
    return False


def _chain(error: BaseException) -> list[BaseException]:
    """The error and what caused it, down to the socket's own error (clients wrap it, some twice)."""
    chain: list[BaseException] = []
    cause: BaseException | None = error
    while cause is not None and cause not in chain:
        chain.append(cause)
        cause = cause.__cause__ or cause.__context__
    return chain


# Connection refused, no route to the network or the host: nothing is there to answer.
_NOTHING_THERE = frozenset({errno.ECONNREFUSED, errno.ENETUNREACH, errno.EHOSTUNREACH})


def is_unreachable(error: BaseException) -> bool:
    """Whether nothing answered at all (connection refused, unknown host, no route), as opposed to a server
    that answered slowly or badly: retrying at once cannot help."""
    return any(isinstance(cause, socket.gaierror) or (isinstance(cause, OSError) and cause.errno in _NOTHING_THERE)
               for cause in _chain(error))


def connection_reason(error: BaseException) -> str:
    """Why a connection failed, in the system's words ("Connection refused", "Name or service not known")
    rather than a client's vaguer ones ("All connection attempts failed")."""
    for cause in reversed(_chain(error)):
        if isinstance(cause, socket.gaierror) and cause.strerror:
            return cause.strerror
        if isinstance(cause, OSError) and cause.errno and cause.errno > 0:
            return os.strerror(cause.errno)
    cause = _chain(error)[-1]
    return str(cause) or type(cause).__name__


def backoff(attempt: int, base: float, cap: float, floor: float = 0.0) -> float:
    """Exponential backoff with jitter: uniform in [floor, 1] x min(cap, base x 2^attempt)."""
    return random.uniform(floor, 1.0) * min(cap, base * 2**attempt)


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


def retry_policy(
    retries: int,
    base: float = 0.5,
    cap: float = 30.0,
    *,
    retry: Callable[[BaseException], bool] = is_transient,
    retry_unreachable: bool = True,
    on_retry: Callable[[], None] | None = None,
) -> dict[str, Any]:
    """kb's retry policy as tenacity's arguments, for `Retrying(**...)` or `AsyncRetrying(**...)`: up to
    `retries` more attempts for the errors `retry` accepts, then the last error is raised as it is.
    `retry_unreachable=False` fails at once when nothing answers (a probe, a health check)."""
    from tenacity import RetryCallState, retry_if_exception, stop_after_attempt

    def worth_retrying(error: BaseException) -> bool:
        return retry(error) and (retry_unreachable or not is_unreachable(error))

    def wait(state: RetryCallState) -> float:
        delay = backoff(state.attempt_number - 1, base, cap)
        error = state.outcome.exception() if state.outcome else None
        asked = retry_after(getattr(getattr(error, "response", None), "headers", None))
        return max(delay, min(asked, cap)) if asked else delay

    return {
        "retry": retry_if_exception(worth_retrying),
        "stop": stop_after_attempt(retries + 1),
        "wait": wait,
        "reraise": True,
        "before_sleep": (lambda _state: on_retry()) if on_retry else None,
    }


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


def response_message(response: httpx.Response) -> str:
    """What a server said in an error answer, shortened for a message."""
    try:
        body = response.json()
    except ValueError:
        return response.text[:300] or response.reason_phrase
    return (body_message(body) or str(body))[:300]


def error_message(error: object) -> str:
    """What the server said in an openai client's status error."""
    return body_message(getattr(error, "body", None)) or str(getattr(error, "message", error))


def describe(error: BaseException, timeout_advice: str = "raise --timeout") -> str:
    """A failure the retry policy gave up on, in words a user can act on."""
    openai = sys.modules.get("openai")
    if isinstance(error, httpx.TimeoutException) or (openai and isinstance(error, openai.APITimeoutError)):
        return f"timed out ({timeout_advice})"
    if isinstance(error, httpx.TransportError) or (openai and isinstance(error, openai.APIConnectionError)):
        return f"connection failed ({connection_reason(error)})"
    if isinstance(error, httpx.HTTPStatusError):
        return f"HTTP {error.response.status_code}: {response_message(error.response)}"
    if openai and isinstance(error, openai.APIStatusError):
        return f"HTTP {error.status_code}: {error_message(error)}"
    if isinstance(error, json.JSONDecodeError):
        return "the answer is not JSON"
    return f"{type(error).__name__}: {error}"
