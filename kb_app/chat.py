"""The chat model that writes answers: any OpenAI-compatible `/v1/chat/completions` (SGLang, vLLM, llama.cpp, a
hosted API), streamed through the openai client.

What the rest of kb needs from it, and nothing more: the answer's text as it arrives, with any `<think>` block
taken out; the token usage; transient faults (429, 503, a refused connection) retried until the first token,
never after it (the text already shown would repeat); and each failure as a `ChatError` that says what the
server did, a stream cut short included.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from typing import Iterator

import httpx
import openai

from ingest.errors import ChatBusyError, ChatError, ConfigError, ContextTooLongError
from ingest.settings import Settings

# Qwen3 (and other hybrid-thinking models) take this through the chat template; vLLM and SGLang accept it.
NO_THINKING = {"chat_template_kwargs": {"enable_thinking": False}}
THINK_OPEN, THINK_CLOSE = "<think>", "</think>"
# Phrases servers use when the prompt is past the model's context (vLLM, SGLang, llama.cpp, OpenAI).
_TOO_LONG = re.compile(
    r"maximum context length|context length|context_length_exceeded|maximum model length|longer than the maximum"
    r"|exceeds? the (?:available )?context|prompt is too long|too many tokens",
    re.IGNORECASE,
)
_RETRY_AFTER_MAX = 10.0  # seconds: a longer Retry-After is not worth a person's wait; kb gives up sooner


@dataclass
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def to_dict(self) -> dict[str, int]:
        return {"prompt_tokens": self.prompt_tokens, "completion_tokens": self.completion_tokens,
                "total_tokens": self.total_tokens}


@dataclass
class Reply:
    """What the stream said besides its text, filled in as it goes."""

    model: str
    usage: Usage | None = None
    finish_reason: str | None = None
    first_token_s: float | None = None  # seconds from the request to the first token of the answer
    retries: int = 0
    thinking_stripped: bool = False
    extra: dict = field(default_factory=dict)


class ThinkFilter:
    """Takes `<think>…</think>` out of a streamed text, however the tags are split across pieces.

    A model told not to think may still open a think block (or, with thinking on, a server may pass it through as
    content): the reader sees only what comes after it. An unclosed block is thinking to the end, and yields nothing.
    """

    def __init__(self) -> None:
        self._pending = ""
        self._inside = False
        self._started = False  # text other than whitespace has been let through
        self.stripped = False

    def feed(self, piece: str) -> str:
        self._pending += piece
        out = []
        while self._pending:
            if self._inside:
                end = self._pending.find(THINK_CLOSE)
                if end < 0:
                    self._pending = self._pending[-(len(THINK_CLOSE) - 1):]  # a tag may be split
                    break
                self._pending = self._pending[end + len(THINK_CLOSE):].lstrip()
                self._inside = False
                continue
            start = self._pending.find(THINK_OPEN)
            if start >= 0:
                out.append(self._pending[:start])
                self._pending = self._pending[start + len(THINK_OPEN):]
                self._inside = self.stripped = True
                continue
            keep = _partial_tag(self._pending)
            out.append(self._pending[: len(self._pending) - keep])
            self._pending = self._pending[len(self._pending) - keep:]
            break
        text = "".join(out)
        if not self._started:
            text = text.lstrip()  # the blank lines a closed think block leaves
            self._started = bool(text)
        return text

    def flush(self) -> str:
        """What was held back for a tag that never came."""
        rest, self._pending = ("" if self._inside else self._pending), ""
        return rest


def _partial_tag(text: str) -> int:
    """How many characters at the end of `text` could begin `<think>` (held back until the next piece)."""
    for size in range(min(len(THINK_OPEN) - 1, len(text)), 0, -1):
        if THINK_OPEN.startswith(text[-size:]):
            return size
    return 0


def _message(exc: openai.APIStatusError) -> str:
    """The server's own words from an error answer (OpenAI's {"error": {"message"}}, vLLM's {"message"})."""
    body = exc.body
    if isinstance(body, dict):
        inner = body.get("error", body)
        if isinstance(inner, dict) and inner.get("message"):
            return str(inner["message"])
        if isinstance(inner, str):
            return inner
    return exc.message


class ChatModel:
    """One chat endpoint and model. `stream(messages)` yields the answer's text; its `Reply` says the rest."""

    def __init__(self, endpoint: str, model: str | None = None, api_key: str | None = None, *,
                 timeout: float = 120.0, retries: int = 3, max_tokens: int = 1024) -> None:
        self.endpoint = endpoint.rstrip("/")
        self.retries = retries
        self.max_tokens = max_tokens
        # Retries are kb's (only before the first token): the client's own would retry mid-answer too.
        self.client = openai.OpenAI(base_url=self.endpoint, api_key=api_key or "not-needed", max_retries=0,
                                    timeout=httpx.Timeout(timeout, connect=min(timeout, 10.0)))
        self._model = model
        self._extra: dict = dict(NO_THINKING)  # dropped, once, by a server that refuses the field

    @classmethod
    def from_settings(cls, settings: Settings) -> ChatModel:
        if not settings.chat_endpoint:
            raise ConfigError("answers need a chat model: set KB_CHAT_ENDPOINT (an OpenAI-compatible base URL such "
                              "as http://127.0.0.1:30000/v1) or pass --chat-endpoint")
        key = settings.chat_api_key.get_secret_value() if settings.chat_api_key else None
        return cls(settings.chat_endpoint, settings.chat_model, key, timeout=settings.chat_timeout,
                   retries=settings.chat_retries, max_tokens=settings.answer_tokens)

    @property
    def model(self) -> str:
        """The served model's name: the one configured, else the first the endpoint lists (vLLM and SGLang serve
        one)."""
        if self._model is None:
            try:
                served = [m.id for m in self.client.models.list()]
            except (openai.APIConnectionError, openai.APITimeoutError) as exc:
                raise ChatError(f"cannot reach the chat endpoint {self.endpoint}: {exc}") from None
            except openai.APIStatusError as exc:
                raise ChatError(f"the chat endpoint {self.endpoint} would not list its models "
                                f"(HTTP {exc.status_code}: {_message(exc)}): set KB_CHAT_MODEL") from None
            if not served:
                raise ChatError(f"the chat endpoint {self.endpoint} serves no model")
            self._model = served[0]
        return self._model

    def _open(self, messages: list[dict], max_tokens: int, reply: Reply) -> openai.Stream:
        """The stream, once the server has accepted the request: transient refusals are retried here."""
        delay = 0.5
        for attempt in range(self.retries + 1):
            try:
                return self.client.chat.completions.create(
                    model=reply.model, messages=messages, stream=True, max_tokens=max_tokens, temperature=0,
                    stream_options={"include_usage": True}, extra_body=self._extra or None)
            except openai.BadRequestError as exc:
                said = _message(exc)
                if self._extra and "chat_template_kwargs" in said:
                    self._extra = {}  # a server (OpenAI's own) that refuses the field: ask again without it
                    continue
                if _TOO_LONG.search(said):
                    raise ContextTooLongError(
                        f"the chat model at {self.endpoint} cannot take the question with its passages: {said} "
                        "(lower --context-tokens, KB_CONTEXT_TOKENS, to the model's context length, or ask for "
                        "fewer passages with -k)") from None
                raise ChatError(f"the chat endpoint {self.endpoint} refused the request (HTTP 400): {said}") from None
            except openai.AuthenticationError as exc:
                raise ChatError(f"the chat endpoint {self.endpoint} refused the API key (KB_CHAT_API_KEY): "
                                f"{_message(exc)}") from None
            except openai.NotFoundError as exc:
                raise ChatError(f"the chat endpoint {self.endpoint} has no model {reply.model!r} "
                                f"(HTTP 404: {_message(exc)}): check KB_CHAT_MODEL") from None
            except (openai.RateLimitError, openai.InternalServerError) as exc:
                if attempt == self.retries:
                    raise ChatBusyError(
                        f"the chat endpoint {self.endpoint} is overloaded (HTTP {exc.status_code}: {_message(exc)}) "
                        f"after {attempt + 1} tries; try again shortly") from None
                wait = _retry_after(exc.response) or delay
            except (openai.APIConnectionError, openai.APITimeoutError) as exc:
                if attempt == self.retries:
                    raise ChatError(f"cannot reach the chat endpoint {self.endpoint} ({type(exc).__name__}: "
                                    f"{exc}) after {attempt + 1} tries") from None
                wait = delay
            except openai.APIStatusError as exc:
                raise ChatError(f"the chat endpoint {self.endpoint} failed (HTTP {exc.status_code}: "
                                f"{_message(exc)})") from None
            reply.retries += 1
            time.sleep(wait)
            delay = min(delay * 2, 4.0)
        raise ChatError(f"the chat endpoint {self.endpoint} refused every request")  # not reached: the loop raises

    def stream(self, messages: list[dict], reply: Reply | None = None, max_tokens: int | None = None) -> Iterator[str]:
        """The answer's text, piece by piece, think blocks removed. `reply` (a fresh one if None) is filled in:
        usage, finish reason, time to the first token. A stream that ends without a finish reason, or breaks
        off, raises ChatError after the text it did give."""
        reply = reply or Reply(self.model)
        started = time.perf_counter()
        stream = self._open(messages, max_tokens or self.max_tokens, reply)
        think = ThinkFilter()
        given = 0
        try:
            for chunk in stream:
                if chunk.usage is not None:
                    reply.usage = Usage(chunk.usage.prompt_tokens or 0, chunk.usage.completion_tokens or 0)
                for choice in chunk.choices[:1]:
                    text = think.feed(choice.delta.content or "") if choice.delta else ""
                    if text:
                        if reply.first_token_s is None:
                            reply.first_token_s = time.perf_counter() - started
                        given += len(text)
                        yield text
                    if choice.finish_reason:
                        reply.finish_reason = choice.finish_reason
        except (httpx.HTTPError, openai.APIError) as exc:
            raise ChatError(f"the chat endpoint {self.endpoint} broke off the answer after {given} characters "
                            f"({type(exc).__name__}: {exc}); what came is shown, the rest is missing") from None
        finally:
            stream.close()
        rest = think.flush()
        if rest:
            yield rest
        reply.thinking_stripped = think.stripped
        if reply.finish_reason is None:
            raise ChatError(f"the chat endpoint {self.endpoint} ended the answer after {given} characters without "
                            "finishing it (no finish reason): the rest is missing")


def _retry_after(response: httpx.Response) -> float | None:
    """Seconds the server asked us to wait (Retry-After in seconds), capped."""
    value = response.headers.get("retry-after")
    try:
        return min(float(value), _RETRY_AFTER_MAX) if value else None
    except ValueError:
        return None
