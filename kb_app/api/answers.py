"""Answers over HTTP: kb's own `POST /v1/ask` (server-sent events, or JSON), and OpenAI's `GET /v1/models` and
`POST /v1/chat/completions`, so that any OpenAI client (Open WebUI, the openai package) can add kb as a model
that answers from the knowledge base, one model per collection (`kb:<collection>`).

Thin, as every route of `kb serve`: `kb_app.answer` decides (search, floor, budget, prompt, citation checks) and
the service runs it in worker threads; these routes validate, pick the question and shape the events. A stream
is never cut silently: a chat server failing mid-answer ends it with an error event after the text that came.
"""

from __future__ import annotations

import itertools
import json
import logging
import time
import uuid
from dataclasses import asdict
from datetime import datetime
from typing import Any, Iterable, Iterator, Literal

from anyio import to_thread
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, field_validator

from ingest.errors import ContextTooLongError
from kb_app import answer as answers
from kb_app.answer import Answer, Delta, Done, Retrieval
from kb_app.api.app import error
from kb_app.api.rest import MAX_QUERY, WhereFilter, known, service_of
from kb_app.chat import ChatModel

log = logging.getLogger("kb.serve")
router = APIRouter()
PREFIX = "kb:"  # a collection's model name: kb:<collection>
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}  # proxies pass events on as they come
ANSWER_K = 6  # passages an OpenAI-style request is answered from (kb ask's default)


class AskRequest(BaseModel):
    """A question: the fields of `kb ask`, and whether to stream the answer."""

    model_config = ConfigDict(extra="forbid")

    question: str = Field(min_length=1, max_length=MAX_QUERY)
    k: int = Field(default=6, ge=1, le=100)
    collection: str | None = None
    mode: Literal["dense", "hybrid"] | None = None
    rerank: bool | None = None
    where: WhereFilter = None
    stream: bool = True

    @field_validator("question")
    @classmethod
    def _not_blank(cls, question: str) -> str:
        if not question.strip():
            raise ValueError("the question is empty")
        return question


class Message(BaseModel):
    model_config = ConfigDict(extra="allow")  # name, tool calls...: kb reads the text alone

    role: str
    content: str | list[dict[str, Any]] | None = None


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="allow")

    include_usage: bool = False


class CompletionRequest(BaseModel):
    """OpenAI's chat completion request. Sampling fields (temperature, top_p, n, tools...) are accepted and
    left alone: kb's answers are grounded in the passages, at the chat model's settings."""

    model_config = ConfigDict(extra="allow")

    model: str
    messages: list[Message] = Field(min_length=1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)


async def _prepare(request: Request, question: str, collection: str | None, *, k: int, mode: str | None = None,
                   rerank: bool | None = None, where: dict[str, Any] | None = None,
                   answer_tokens: int | None = None) -> tuple[Retrieval, ChatModel]:
    """The chat model and the retrieval (search, floor, budget, prompt), in a worker thread: no chat endpoint
    configured is a ConfigError (503), a budget that cannot hold a passage a ContextTooLongError (502)."""
    service = service_of(request)

    def prepare() -> tuple[Retrieval, ChatModel]:
        chat = service.chat()
        retrieval = service.retrieve(question, collection, k=k, mode=mode, rerank=rerank, where=where,
                                     chat_model=answers.configured_model(chat), answer_tokens=answer_tokens)
        return retrieval, chat

    return await to_thread.run_sync(prepare)


def _last(events: Iterable[Delta | Done]) -> Answer:
    """The whole answer (the stream run to its end)."""
    for event in events:
        if isinstance(event, Done):
            return event.answer
    raise RuntimeError("the answer stream ended without its Done event")  # kb_app.answer.stream always sends it


def chat_status(answer: Answer) -> int:
    """The HTTP status of a chat failure: 503 (try again) when the chat server stayed overloaded, else 502."""
    return 503 if answer.busy else 502


def _sse(event: str, data: dict[str, Any]) -> str:
    return f"event: {event}\ndata: {json.dumps(data, ensure_ascii=False)}\n\n"


def numbered(passages: list) -> list[dict[str, Any]]:
    return [{"n": n, **passage.to_dict()} for n, passage in enumerate(passages, start=1)]


@router.post("/v1/ask")
async def ask(body: AskRequest, request: Request) -> Any:  # noqa: ANN401 - events, JSON or an error
    """An answer from the passages, with citations: server-sent events (`passages`, `delta`..., then `done`,
    `error` before it when the chat server failed), or with `stream` false the answer as JSON (`kb ask --json`)."""
    missing = await known(request, body.collection)
    if missing:
        return missing
    retrieval, chat = await _prepare(request, body.question, body.collection, k=body.k, mode=body.mode,
                                     rerank=body.rerank, where=body.where)
    events = answers.stream(retrieval, chat)
    if body.stream:
        return StreamingResponse(_ask_events(retrieval, events), media_type="text/event-stream", headers=SSE_HEADERS)
    done = await to_thread.run_sync(_last, events)
    if done.error:
        return JSONResponse({"error": done.error, "answer": done.to_dict()}, status_code=chat_status(done))
    return done.to_dict()


def _ask_events(retrieval: Retrieval, events: Iterator[Delta | Done]) -> Iterator[str]:
    """/v1/ask's events. Starlette runs this generator in a worker thread, a step at a time."""
    yield _sse("passages", {
        "found": retrieval.found, "passages": numbered(retrieval.passages), "collection": retrieval.collection,
        "mode": retrieval.mode, "language": retrieval.language, "best_score": retrieval.best_score,
        "floor": retrieval.floor, "dropped": retrieval.dropped, "latency_ms": {"search": round(retrieval.search_ms, 1)},
    })
    try:
        for event in events:
            if isinstance(event, Delta):
                yield _sse("delta", {"text": event.text})
                continue
            if event.answer.error:
                yield _sse("error", {"error": event.answer.error, "status": chat_status(event.answer)})
            yield _sse("done", event.answer.to_dict())
    except Exception as exc:  # a fault of kb's own: said in the stream, which must not just stop
        log.exception("/v1/ask failed while streaming")
        yield _sse("error", {"error": f"kb failed while answering ({type(exc).__name__}: {exc})", "status": 500})


def _created(collection: dict[str, Any]) -> int:
    """A model's `created`: the collection's last ingest, as a Unix time (0 when unknown)."""
    try:
        return int(datetime.fromisoformat(collection["last_ingest"]).timestamp())
    except (KeyError, TypeError, ValueError):
        return 0


@router.get("/v1/models")
async def models(request: Request) -> dict[str, Any]:
    """OpenAI's model list: one model per collection, `kb:<collection>`. Empty when no chat endpoint is
    configured (KB_CHAT_ENDPOINT), since nothing could answer."""
    service = service_of(request)
    if not service.has_chat():
        return {"object": "list", "data": []}
    collections = await to_thread.run_sync(service.collections)
    return {"object": "list", "data": [
        {"id": PREFIX + c["collection"], "object": "model", "created": _created(c), "owned_by": "kb"}
        for c in collections if c.get("model")]}


def openai_error(status: int, message: str, kind: str, code: str | int | None = None) -> JSONResponse:
    """An error in OpenAI's shape, which its clients read the message from."""
    return JSONResponse({"error": {"message": message, "type": kind, "param": None, "code": code}},
                        status_code=status)


def question_of(messages: list[Message]) -> str:
    """The last user message's text (a string, or the text parts of a list of content parts)."""
    for message in reversed(messages):
        if message.role == "user":
            if isinstance(message.content, str):
                return message.content
            return "\n".join(str(part.get("text") or "") for part in message.content or []
                             if part.get("type") == "text")
    return ""


async def _model_collection(request: Request, model: str) -> str | JSONResponse:
    """The collection a model name means, or OpenAI's 404 naming the models there are."""
    name = model[len(PREFIX):] if model.startswith(PREFIX) else None
    service = service_of(request)
    if name and await to_thread.run_sync(service.exists, name):
        return name
    served = [PREFIX + c["collection"] for c in await to_thread.run_sync(service.collections) if c.get("model")]
    return openai_error(404, f"the model {model!r} does not exist: kb serves one model per collection "
                             f"({', '.join(served) or 'none yet: ingest documents first'})",
                        "invalid_request_error", "model_not_found")


@router.post("/v1/chat/completions")
async def completions(body: CompletionRequest, request: Request) -> Any:  # noqa: ANN401 - a completion or events
    """OpenAI's chat completions over the knowledge base: the last user message is the question, the answer
    cites the passages in its text and in a `citations` field (on the final chunk when streamed)."""
    collection = await _model_collection(request, body.model)
    if isinstance(collection, JSONResponse):
        return collection
    question = question_of(body.messages)
    if not question.strip():
        return error(request, 400, "no question: the last user message has no text")
    if len(question) > MAX_QUERY:
        return error(request, 400, f"the question is {len(question)} characters: at most {MAX_QUERY} are taken")
    cap = body.max_completion_tokens or body.max_tokens
    try:
        retrieval, chat = await _prepare(request, question, collection, k=ANSWER_K, answer_tokens=cap)
    except ContextTooLongError as exc:
        if cap is None:
            raise  # kb's own settings leave no room: the server's fault (502)
        return error(request, 400, f"max_tokens {cap} leaves too little of the chat model's context for the "
                                   f"passages: {exc}")
    events = answers.stream(retrieval, chat)
    first = await to_thread.run_sync(next, events)  # the chat model's first token, or its failure
    if isinstance(first, Done) and first.answer.error:  # failed before any text: a status the client can act on
        return openai_error(chat_status(first.answer), first.answer.error, "server_error", chat_status(first.answer))
    ident, created = f"chatcmpl-kb-{uuid.uuid4().hex}", int(time.time())
    rest = itertools.chain([first], events)
    if body.stream:
        usage = bool(body.stream_options and body.stream_options.include_usage)
        return StreamingResponse(_chunks(rest, ident, created, body.model, usage), media_type="text/event-stream",
                                 headers=SSE_HEADERS)
    done = await to_thread.run_sync(_last, rest)
    if done.error:
        return openai_error(chat_status(done), done.error, "server_error", chat_status(done))
    return {"id": ident, "object": "chat.completion", "created": created, "model": body.model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": done.answer + sources_text(done)},
                         "finish_reason": done.finish_reason or "stop"}],
            "usage": _usage(done), "citations": [asdict(c) for c in done.citations]}


def _chunks(events: Iterator[Delta | Done], ident: str, created: int, model: str, usage: bool) -> Iterator[str]:
    """`chat.completion.chunk` events, as OpenAI streams them, ending with `data: [DONE]`."""

    def chunk(delta: dict[str, Any], finish: str | None = None, **extra: Any) -> str:  # noqa: ANN401
        return _data({"id": ident, "object": "chat.completion.chunk", "created": created, "model": model,
                      "choices": [{"index": 0, "delta": delta, "finish_reason": finish}], **extra})

    yield chunk({"role": "assistant", "content": ""})
    try:
        for event in events:
            if isinstance(event, Delta):
                yield chunk({"content": event.text})
                continue
            done = event.answer
            if done.error:  # after the text that came: an error event, which OpenAI's clients raise
                yield _data({"error": {"message": done.error, "type": "server_error", "param": None,
                                       "code": chat_status(done)}})
                break
            if sources_text(done):
                yield chunk({"content": sources_text(done)})
            yield chunk({}, done.finish_reason or "stop", citations=[asdict(c) for c in done.citations])
            if usage:
                yield _data({"id": ident, "object": "chat.completion.chunk", "created": created, "model": model,
                             "choices": [], "usage": _usage(done)})
    except Exception as exc:  # a fault of kb's own: said in the stream, which must not just stop
        log.exception("/v1/chat/completions failed while streaming")
        yield _data({"error": {"message": f"kb failed while answering ({type(exc).__name__}: {exc})",
                               "type": "server_error", "param": None, "code": 500}})
    yield "data: [DONE]\n\n"


def _data(payload: dict[str, Any]) -> str:
    return f"data: {json.dumps(payload, ensure_ascii=False)}\n\n"


def _usage(answer: Answer) -> dict[str, int]:
    """The chat model's token usage (zero when it was not asked: nothing found)."""
    return answer.usage or {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}


def sources_text(answer: Answer) -> str:
    """What follows the answer in a plain chat UI: the cited passages as a list, `[n] source, location`; when
    nothing was found, the closest passages, so the reader sees what the knowledge base holds."""
    if answer.citations:
        lines = [f"- [{c.n}] {_where(c.source, c.location, c.heading)}" for c in answer.citations]
        return "\n\nSources:\n" + "\n".join(lines)
    if not answer.found and answer.passages:
        places = dict.fromkeys(_where(p.source, p.location, p.heading) for p in answer.passages)  # once each
        return "\n\nClosest passages (below the relevance floor):\n" + "\n".join(f"- {w}" for w in list(places)[:3])
    return ""


def _where(source: str, location: str, heading: str | None) -> str:
    return source + (f", {location}" if location else f", {heading}" if heading else "")
