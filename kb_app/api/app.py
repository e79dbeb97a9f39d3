"""`kb serve`'s HTTP application: FastAPI over `KnowledgeService`, with bearer auth and errors as messages.

Every route is a thin shell: it validates the request (pydantic), runs the service in a worker thread (searches
side by side, off the event loop, while an upload ingests) and shapes the answer. Errors a user can act on come
back as 4xx with a message (`{"error": ...}`; Dify's `{error_code, error_msg}` on /retrieval; OpenAI's
`{"error": {"message", "type", "code"}}` on its routes), never a traceback. A chat server's failure is a 502, or
a 503 when it stayed overloaded or none is configured.
"""

from __future__ import annotations

import hmac
import json
import logging
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any, AsyncIterator, Awaitable, Callable

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response

from ingest.errors import (
    ChatBusyError,
    ChatError,
    ConfigError,
    EmbeddingError,
    KbError,
    SearchError,
    StoreBusyError,
    StoreError,
)
from kb_app.service import KnowledgeService

log = logging.getLogger("kb.serve")

Lifespan = Callable[[FastAPI], Any]  # an async context manager factory, as FastAPI's lifespan takes
OPENAI_PATHS = ("/v1/chat/completions", "/v1/models")  # errors there in OpenAI's shape, which its clients read
ANSWER_PATHS = ("/v1/ask", "/v1/chat/completions")  # the routes that need a chat model


def create_app(service: KnowledgeService, token: str | None = None, *,
               lifespans: tuple[Lifespan, ...] = (), mounts: dict[str, Any] | None = None) -> FastAPI:
    """The application: REST under /v1, Dify's /retrieval, /health, /metrics (Prometheus), OpenAPI at
    /openapi.json and /docs.
    `token` guards every path but /health; `mounts` are further ASGI apps by path (MCP at /mcp), whose
    `lifespans` run with the server's."""
    from kb_app.api import answers, dify, rest

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with AsyncExitStack() as stack:
            for each in lifespans:
                await stack.enter_async_context(each(app))
            yield

    app = FastAPI(title="kb", summary="Search a multilingual knowledge base built by kb ingest.",
                  version="0.2.0", lifespan=lifespan)
    app.state.service = service
    app.include_router(rest.router)
    app.include_router(dify.router)
    app.include_router(answers.router)
    for path, mounted in (mounts or {}).items():
        app.mount(path, mounted)
    app.add_api_route("/metrics", _metrics, methods=["GET"], include_in_schema=False)
    app.add_exception_handler(RequestValidationError, _invalid)
    app.add_exception_handler(KbError, _kb_error)
    settings = service.settings
    app.add_middleware(BodyLimit, limit=(settings.max_upload_files * settings.max_upload_mb + 1) << 20)
    if token:
        app.add_middleware(BearerAuth, token=token)  # added last: it runs first
    return app


class BodyLimit:
    """Refuses, before reading it, a request whose declared body is past `limit` bytes (all the uploads the
    settings allow at once): such a body is never spooled to disk."""

    def __init__(self, app: Any, limit: int) -> None:  # noqa: ANN401 - any ASGI app
        self.app, self.limit = app, limit

    async def __call__(self, scope: dict, receive: Callable[[], Awaitable[dict]],
                       send: Callable[[dict], Awaitable[None]]) -> None:
        if scope["type"] == "http":
            declared = dict(scope["headers"]).get(b"content-length", b"0")
            if declared.isdigit() and int(declared) > self.limit:
                await _refuse(scope, send, 413, 413, f"the request body ({int(declared) >> 20} MB) is over kb's "
                                                     f"limit of {self.limit >> 20} MB (KB_MAX_UPLOAD_MB x "
                                                     "KB_MAX_UPLOAD_FILES)")
                return
        await self.app(scope, receive, send)


class BearerAuth:
    """Asks every request but /health for `Authorization: Bearer <token>`, compared in constant time.
    Pure ASGI, so it guards mounted apps (MCP) too. The token is never logged."""

    def __init__(self, app: Any, token: str) -> None:  # noqa: ANN401 - any ASGI app
        self.app, self.token = app, token.encode()

    async def __call__(self, scope: dict, receive: Callable[[], Awaitable[dict]],
                       send: Callable[[dict], Awaitable[None]]) -> None:
        if scope["type"] != "http" or scope["path"] == "/health":
            await self.app(scope, receive, send)
            return
        header = dict(scope["headers"]).get(b"authorization", b"")
        scheme, _, given = header.partition(b" ")
        if scheme.lower() != b"bearer" or not given.strip():
            await _refuse(scope, send, 401, 1001, "missing or malformed Authorization header: expected "
                                                   "'Authorization: Bearer <KB_API_TOKEN>'")
        elif not hmac.compare_digest(given.strip(), self.token):
            await _refuse(scope, send, 403, 1002, "authorization failed: the bearer token is not KB_API_TOKEN")
        else:
            await self.app(scope, receive, send)


async def _refuse(scope: dict, send: Callable[[dict], Awaitable[None]], status: int, code: int, message: str) -> None:
    """A refusal in the shape the path speaks: Dify's on /retrieval (403 for both, as Dify expects), OpenAI's on
    its routes, kb's elsewhere."""
    if scope["path"].rstrip("/") == "/retrieval":
        status = 403 if status in (401, 403) else status  # Dify expects 403 for both of its auth errors
        body = {"error_code": code, "error_msg": message}
    else:
        body = _shape(scope["path"], status, message)
    data = json.dumps(body).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())]
    if status == 401:
        headers.append((b"www-authenticate", b'Bearer realm="kb"'))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": data})


def error(request: Request, status: int, message: str, dify_code: int | None = None) -> JSONResponse:
    """An error answer: Dify's shape on /retrieval, OpenAI's on its routes, `{"error": message}` elsewhere."""
    if request.url.path.rstrip("/") == "/retrieval":
        return JSONResponse({"error_code": dify_code or status, "error_msg": message}, status_code=status)
    return JSONResponse(_shape(request.url.path, status, message), status_code=status)


def _shape(path: str, status: int, message: str) -> dict[str, Any]:
    """`{"error": message}`, or on OpenAI's routes `{"error": {"message", "type", "code"}}` as OpenAI sends it."""
    if path.rstrip("/") not in OPENAI_PATHS:
        return {"error": message}
    kinds = {401: "authentication_error", 403: "permission_error", 404: "not_found_error"}
    kind = kinds.get(status, "invalid_request_error" if status < 500 else "server_error")
    return {"error": {"message": message, "type": kind, "param": None, "code": status}}


async def _metrics(request: Request) -> Response:
    """The server's metrics in Prometheus' text format (behind the bearer token, as every route but /health:
    they name the collections' endpoints and show how the server is used)."""
    from prometheus_client import CONTENT_TYPE_LATEST

    body = request.app.state.service.metrics.exposition()
    return Response(body, headers={"Content-Type": CONTENT_TYPE_LATEST})


async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
    """A request that does not parse or validate: 422 with each problem said where it is."""
    if isinstance(exc.body, (bytes, bytearray)):
        # A JSON route given a body it did not parse as JSON (FastAPI reads JSON only under a JSON content type):
        # say so, rather than that the body is "not a valid dictionary".
        kind = request.headers.get("content-type")
        came = f"the content type was {kind!r}" if kind else "it came with no content type"
        return error(request, 422, f"invalid request: the body must be JSON, sent with 'Content-Type: "
                                   f"application/json' ({came})")
    problems = []
    for item in exc.errors():
        if item.get("type") == "json_invalid":  # FastAPI's: loc is ("body", character), ctx names the fault
            reason = (item.get("ctx") or {}).get("error", "")
            problems.append(f"the body is not valid JSON ({reason} at character {item.get('loc', ('', '?'))[-1]})")
            continue
        where = ".".join(str(part) for part in item.get("loc", ()) if part != "body") or "body"
        problems.append(f"{where}: {item.get('msg', 'invalid')}")
    return error(request, 422, "invalid request: " + "; ".join(problems))


async def _kb_error(request: Request, exc: KbError) -> JSONResponse:
    """kb's own errors, each with the status that tells a client what to do."""
    if isinstance(exc, StoreBusyError):
        status = 409
    elif isinstance(exc, ChatError):  # the chat server's fault, not the request's: 503 says try again shortly
        status = 503 if isinstance(exc, ChatBusyError) else 502
        log.warning("%s %s: %s", request.method, request.url.path, exc)
    elif isinstance(exc, ConfigError) and request.url.path.rstrip("/") in ANSWER_PATHS \
            and not request.app.state.service.has_chat():
        status = 503  # no chat endpoint configured: this server cannot answer, whatever the request
    elif isinstance(exc, (StoreError, EmbeddingError)):
        status = 503
        log.warning("%s %s: %s", request.method, request.url.path, exc)
    elif isinstance(exc, (ConfigError, SearchError)):
        status = 400
    else:
        status = 400
    return error(request, status, str(exc))
