"""A scripted OpenAI-compatible chat server, for what a real one cannot do on demand: exact answers (citations
that point where a test says), think blocks, and faults at a chosen moment.

It speaks the real API: `POST /v1/chat/completions` streamed as server-sent events in chunked transfer encoding
(`chat.completion.chunk` objects, a usage chunk when `stream_options.include_usage` is set, then `data: [DONE]`),
or one JSON answer when `stream` is false; `GET /v1/models`; errors as OpenAI's `{"error": {...}}` (vLLM's
`{"object": "error", ...}` for a context too long). Each request takes the next entry of the script:

- any text: the answer, streamed in pieces of `piece` characters (so markers and tags split across chunks);
- "429", "429:2" (Retry-After 2 s), "503", "500", "401", "404": that HTTP error;
- "toolong": vLLM's 400 for a prompt past the model's context;
- "drop": the connection closed before any answer;
- "cut:TEXT": TEXT streamed, then the connection closed mid-stream (no final chunk, no [DONE]);
- "nofinish:TEXT": TEXT streamed and [DONE] sent, but no chunk with a finish reason;
- "error:TEXT": TEXT streamed, then an error event in the stream (what vLLM sends when generation fails).

With the script empty it answers `default` (a function of the request body, or a text).
`refuse_template_kwargs` makes it refuse `chat_template_kwargs` as OpenAI's own API does.
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from http.server import ThreadingHTTPServer
from typing import Callable

from tests.fakeserver import JsonHandler

MODEL = "fake-chat"


class _QuietServer(ThreadingHTTPServer):
    def handle_error(self, request: object, client_address: object) -> None:
        pass  # a connection the script dropped on purpose is not news


def words(text: str) -> int:
    return len(text.split()) + 1


class FakeChatServer:
    def __init__(self, model: str = MODEL, piece: int = 3, default: str | Callable[[dict], str] = "An answer [1].",
                 max_context: int = 1_000_000) -> None:
        self.model = model
        self.piece = piece
        self.default = default
        self.max_context = max_context  # in whitespace words: past it, "toolong"
        self.script_: deque[str] = deque()
        self.bodies: list[dict] = []  # every chat request body received
        self.headers: list[dict] = []  # and its headers, names in lower case
        self.lock = threading.Lock()
        self.refuse_template_kwargs = False
        self.delay = 0.0  # seconds between streamed pieces
        # A stream pauses after `hold_after` pieces until `release` is set: a test can see a partial answer
        # on the page however slow the machine is.
        self.hold_after: int | None = None
        self.release = threading.Event()
        server = self

        class Handler(JsonHandler):
            def do_GET(self) -> None:
                if self.path.rstrip("/").endswith("/models"):
                    self._send(200, {"object": "list", "data": [{"id": server.model, "object": "model",
                                                                 "owned_by": "fake"}]})
                else:
                    self._send(200, {"status": "ok"})

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length) or b"{}")
                if not self.path.rstrip("/").endswith("/chat/completions"):
                    self._send(404, {"error": {"message": f"no route {self.path}", "type": "not_found"}})
                    return
                with server.lock:
                    server.bodies.append(body)
                    server.headers.append({k.lower(): v for k, v in self.headers.items()})
                    step = server.script_.popleft() if server.script_ else None
                if server.refuse_template_kwargs and "chat_template_kwargs" in body:
                    self._send(400, {"error": {"message": "Unrecognized request argument supplied: "
                                                          "chat_template_kwargs", "type": "invalid_request_error"}})
                    return
                if step is None:
                    step = server.default(body) if callable(server.default) else server.default
                prompt = sum(words(m.get("content") or "") for m in body.get("messages", []))
                if step == "toolong" or prompt > server.max_context:
                    self._send(400, {"object": "error", "type": "BadRequestError", "code": 400, "message": (
                        f"This model's maximum context length is {server.max_context} tokens. However, you "
                        f"requested {prompt + (body.get('max_tokens') or 0)} tokens. Please reduce the length "
                        "of the messages or completion.")})
                    return
                if step.split(":")[0] in ("429", "503", "500", "401", "404"):
                    code = int(step.split(":")[0])
                    headers = {"Retry-After": step.split(":")[1]} if ":" in step else {}
                    self._send(code, {"error": {"message": f"fake {code}", "type": "server_error", "code": code}},
                               headers)
                    return
                if step == "drop":
                    self.close_connection = True
                    self.connection.shutdown(2)
                    return
                kind, _, text = step.partition(":") if step.split(":")[0] in ("cut", "nofinish", "error") \
                    else ("answer", "", step)
                if not body.get("stream"):
                    self._send(200, server.completion(body, text, prompt))
                    return
                self._stream(body, kind, text, prompt)

            def _chunk(self, data: bytes) -> None:
                self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
                self.wfile.flush()

            def _event(self, payload: dict | str) -> None:
                data = payload if isinstance(payload, str) else json.dumps(payload, ensure_ascii=False)
                self._chunk(f"data: {data}\n\n".encode())

            def _stream(self, body: dict, kind: str, text: str, prompt: int) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                base = {"id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": int(time.time()),
                        "model": body.get("model")}
                try:
                    self._event(base | {"choices": [{"index": 0, "delta": {"role": "assistant", "content": ""},
                                                     "finish_reason": None}]})
                    for n, start in enumerate(range(0, len(text), server.piece)):
                        if server.delay:
                            time.sleep(server.delay)
                        if n == server.hold_after:
                            server.release.wait(timeout=600)
                        self._event(base | {"choices": [{"index": 0, "delta": {
                            "content": text[start:start + server.piece]}, "finish_reason": None}]})
                    if kind == "cut":
                        self.close_connection = True
                        self.connection.shutdown(2)
                        return
                    if kind == "error":
                        self._event({"error": {"message": "fake failure during generation", "type": "server_error",
                                               "code": 500}})
                        self.close_connection = True
                        self._chunk(b"")
                        return
                    if kind != "nofinish":
                        self._event(base | {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
                    if (body.get("stream_options") or {}).get("include_usage"):
                        self._event(base | {"choices": [], "usage": server.usage(prompt, text)})
                    self._event("[DONE]")
                    self._chunk(b"")
                except (BrokenPipeError, ConnectionResetError):
                    self.close_connection = True

        self.httpd = _QuietServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @staticmethod
    def usage(prompt: int, text: str) -> dict:
        completion = words(text)
        return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}

    def completion(self, body: dict, text: str, prompt: int) -> dict:
        return {"id": "chatcmpl-fake", "object": "chat.completion", "created": int(time.time()),
                "model": body.get("model"), "usage": self.usage(prompt, text),
                "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}]}

    def __enter__(self) -> FakeChatServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def script(self, *steps: str) -> None:
        self.script_.extend(steps)

    @property
    def requests(self) -> int:
        return len(self.bodies)

    def last_prompt(self) -> str:
        """The last request's messages as one text (system, then user)."""
        return "\n".join(m.get("content") or "" for m in self.bodies[-1]["messages"])
