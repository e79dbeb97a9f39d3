"""The HTTP pieces every model-server client shares: base URLs, the bearer header, which failures are
transient, the server's own words, and the one retry policy, against a real (scripted) server."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections import deque
from http.server import ThreadingHTTPServer

import httpx
import openai
import pytest
from tenacity import Retrying

from ingest.http import (
    auth_headers,
    body_message,
    connection_reason,
    describe,
    is_transient,
    is_unreachable,
    raise_for_transient,
    retry_after,
    retry_policy,
    server_root,
    v1_url,
)
from tests.fakeserver import JsonHandler

DEAD = "http://127.0.0.1:1"  # nothing listens there


class ScriptedServer:
    """Answers each GET with the next (status, body, headers) of its script, then 200 {"data": []}."""

    def __init__(self) -> None:
        self.script: deque[tuple[int, object, dict]] = deque()
        self.requests: list[dict[str, str]] = []  # each request's headers
        server = self

        class Handler(JsonHandler):
            def do_GET(self) -> None:
                server.requests.append(dict(self.headers))
                status, body, headers = server.script.popleft() if server.script else (200, {"data": []}, {})
                self._send(status, None, headers, raw=body if isinstance(body, bytes) else json.dumps(body).encode())

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    scripted = ScriptedServer()
    yield scripted
    scripted.close()


def policy(retries: int = 3, cap: float = 0.05, **kwargs) -> Retrying:
    """kb's policy with short waits; `.statistics["attempt_number"]` tells the attempts a call took."""
    return Retrying(**retry_policy(retries, 0.01, cap, **kwargs))


def send(url: str) -> httpx.Response:
    response = httpx.get(url, timeout=5, headers=auth_headers("sk-test"))
    raise_for_transient(response)
    return response


def test_base_urls_and_bearer_header():
    assert v1_url("http://h:8000") == v1_url("http://h:8000/") == v1_url("http://h:8000/v1/") == "http://h:8000/v1"
    assert v1_url("https://api.example.com/v2") == "https://api.example.com/v2"
    assert server_root("http://h:8000/v1") == server_root("http://h:8000/") == "http://h:8000"
    assert auth_headers("sk-1") == {"Authorization": "Bearer sk-1"} and auth_headers(None) == auth_headers("") == {}


def test_transient_statuses_are_retried_honouring_retry_after(server):
    server.script.extend([(429, {"error": {"message": "slow down"}}, {"Retry-After": "0.4"}),
                          (503, {"detail": "loading"}, {})])
    retried = []
    started = time.monotonic()
    retrying = policy(cap=2.0, on_retry=lambda: retried.append(1))
    response = retrying(send, server.url)
    assert response.status_code == 200 and retrying.statistics["attempt_number"] == 3 and len(retried) == 2
    assert time.monotonic() - started >= 0.4  # the server's Retry-After is a floor ...
    server.script.append((429, {}, {"Retry-After": "60"}))
    started = time.monotonic()
    assert policy(cap=0.05)(send, server.url).status_code == 200
    assert time.monotonic() - started < 30  # ... up to the policy's cap
    assert all(headers["Authorization"] == "Bearer sk-test" for headers in server.requests)


def test_a_refusal_is_not_retried_and_retries_run_out(server):
    server.script.append((404, {"message": "no such route"}, {}))
    retrying = policy()
    assert retrying(send, server.url).status_code == 404 and retrying.statistics["attempt_number"] == 1
    server.script.extend([(503, {"error": "busy"}, {})] * 3)
    retrying = policy(2)
    with pytest.raises(httpx.HTTPStatusError) as info:
        retrying(send, server.url)
    assert retrying.statistics["attempt_number"] == 3 and describe(info.value) == "HTTP 503: busy"


def test_nothing_answering_is_retried_unless_told_not_to():
    retrying = policy(2)
    with pytest.raises(httpx.ConnectError) as info:
        retrying(send, DEAD)
    assert retrying.statistics["attempt_number"] == 3 and is_unreachable(info.value) and is_transient(info.value)
    retrying = policy(2, retry_unreachable=False)
    with pytest.raises(httpx.ConnectError):
        retrying(send, DEAD)
    assert retrying.statistics["attempt_number"] == 1
    assert connection_reason(info.value) == "Connection refused"
    assert describe(info.value) == "connection failed (Connection refused)"
    with pytest.raises(httpx.ConnectError) as info:
        httpx.get("http://no-such-host.invalid/")
    assert is_unreachable(info.value) and connection_reason(info.value) == "Name or service not known"


def test_the_openai_clients_errors_are_understood(server):
    async def models(url: str) -> None:
        async with openai.AsyncOpenAI(base_url=url, api_key="x", max_retries=0, timeout=5) as client:
            await client.models.list()

    with pytest.raises(openai.APIConnectionError) as dead:
        asyncio.run(models(f"{DEAD}/v1"))
    assert is_transient(dead.value) and is_unreachable(dead.value)
    assert describe(dead.value) == "connection failed (Connection refused)"
    server.script.extend([(503, {"error": {"message": "server busy"}}, {}), (400, {"message": "bad input"}, {})])
    with pytest.raises(openai.APIStatusError) as busy:
        asyncio.run(models(f"{server.url}/v1"))
    assert is_transient(busy.value) and not is_unreachable(busy.value)
    assert describe(busy.value) == "HTTP 503: server busy"
    with pytest.raises(openai.APIStatusError) as bad:
        asyncio.run(models(f"{server.url}/v1"))
    assert not is_transient(bad.value) and describe(bad.value) == "HTTP 400: bad input"


def test_a_body_that_is_not_json_is_transient(server):
    server.script.append((200, b"<html>proxy error</html>", {}))
    with pytest.raises(json.JSONDecodeError) as info:
        httpx.get(server.url).json()
    assert is_transient(info.value) and describe(info.value) == "the answer is not JSON"
    assert not is_transient(ValueError("a bug, not the server"))


@pytest.mark.parametrize(("value", "seconds"), [("2", 2.0), ("0.5", 0.5), ("-1", None), ("inf", None),
                                                ("Wed, 21 Oct 2015 07:28:00 GMT", None)])
def test_retry_after(value, seconds):
    assert retry_after({"retry-after": value}) == seconds
    assert retry_after({}) is None and retry_after(None) is None


def test_body_message_as_each_server_writes_it():
    assert body_message({"error": {"message": "nested"}}) == "nested"  # OpenAI, vLLM
    assert body_message({"object": "error", "message": "flat"}) == "flat"  # SGLang
    assert body_message({"error": "tei", "error_type": "Validation"}) == "tei"  # TEI
    assert body_message("unwrapped") == "unwrapped"  # the openai client unwraps TEI's
    assert body_message({"detail": "fastapi"}) == "fastapi"
    assert body_message({"unrelated": 1}) is None and body_message(None) is None


def test_the_uis_health_check(server):
    from kb_app.ui.settings_page import endpoint_health

    server.script.append((200, {"data": [{"id": "fake-embed"}]}, {}))
    assert endpoint_health(server.url, None) == "✅ up, serving fake-embed"
    server.script.extend([(503, {"error": "loading"}, {})] * 2)
    assert endpoint_health(server.url, "sk-test") == "⚠️ HTTP 503"  # retried once, then told
    assert len(server.requests) == 3 and server.requests[-1]["Authorization"] == "Bearer sk-test"
    assert endpoint_health(DEAD, None) == "❌ unreachable (ConnectError)"
