"""A fault-injecting OpenAI-compatible embeddings server, for what real servers can't do on demand.

It speaks the real API (`POST /v1/embeddings`, SGLang's `POST /v1/tokenize`, `GET /v1/models`) and
answers deterministic vectors (a hash of each input), so tests can check order and exactly-once
storage. Faults are taken from a script, one per request: "429", "429:2" (Retry-After 2 s), "503",
"500", "drop" (close the connection with no answer), "slow" (sleep past the client's timeout),
"count" (one vector too few), "json" (malformed body), "dim" (vectors of the wrong dimension),
"400" (a request error no retry can fix), "401", "ok". Inputs longer than `max_tokens` (whitespace words
plus one) get vLLM's over-length HTTP 400.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections import deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np


class JsonHandler(BaseHTTPRequestHandler):
    """HTTP/1.1 keep-alive, quiet, and `_send` for JSON answers: what the fake servers share."""

    protocol_version = "HTTP/1.1"

    def log_message(self, *args: object) -> None:
        pass

    def _send(self, code: int, payload: object, headers: dict | None = None, raw: bytes | None = None) -> bool:
        """Answer; False when the client had already gone (timed out)."""
        body = raw if raw is not None else json.dumps(payload).encode()
        try:
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            self.end_headers()
            self.wfile.write(body)
            self.wfile.flush()
            return True
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
            return False


def fake_vector(text: str, dim: int = 16) -> np.ndarray:
    seed = int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:8], "little")
    vector = np.random.default_rng(seed).standard_normal(dim).astype(np.float32)
    return vector / np.linalg.norm(vector)


def fake_tokens(text: str) -> int:
    return len(text.split()) + 1


class FakeEmbeddingServer:
    def __init__(self, dim: int = 16, max_tokens: int = 100_000, slow_seconds: float = 3.0,
                 model: str = "fake-embed") -> None:
        self.dim = dim
        self.max_tokens = max_tokens
        self.slow_seconds = slow_seconds
        self.model = model
        self.faults: deque[str] = deque()
        self.lock = threading.Lock()
        self.requests = 0  # embedding requests received
        self.faulted: dict[str, int] = {}
        self.inputs: list[list[str]] = []  # inputs of each successful answer
        self.bodies: list[dict] = []  # every embeddings request body received
        self.tokenize_calls = 0
        self.base64 = True  # answer base64 when asked (False: refuse it with a 400, like a server without it)
        self.too_long_status = 400  # 400 like vLLM/SGLang, 413 like TEI
        self.delay = 0.0  # seconds every embeddings request takes, to see requests overlap
        self.active = 0
        self.max_active = 0  # most embeddings requests in flight at once
        server = self

        class Handler(JsonHandler):
            def do_GET(self) -> None:
                if self.path.endswith("/models"):
                    self._send(200, {"object": "list", "data": [{"id": server.model, "object": "model"}]})
                else:
                    self._send(200, {"status": "ok"})

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length) or b"{}")
                if self.path.endswith("/tokenize"):
                    server.tokenize_calls += 1
                    self._send(200, {"tokens": [], "count": fake_tokens(body.get("prompt", "")),
                                     "max_model_len": server.max_tokens})
                    return
                if not self.path.endswith("/embeddings"):
                    self._send(404, {"error": {"message": "not found"}})
                    return
                with server.lock:
                    server.active += 1
                    server.max_active = max(server.max_active, server.active)
                try:
                    self._embeddings(body)
                finally:
                    with server.lock:
                        server.active -= 1

            def _embeddings(self, body: dict) -> None:
                if server.delay:
                    time.sleep(server.delay)
                with server.lock:
                    server.requests += 1
                    server.bodies.append(body)
                    fault = server.faults.popleft() if server.faults else "ok"
                    if fault != "ok":
                        server.faulted[fault] = server.faulted.get(fault, 0) + 1
                texts = body["input"] if isinstance(body["input"], list) else [body["input"]]
                if fault.startswith("429"):
                    headers = {"Retry-After": fault.split(":")[1]} if ":" in fault else {}
                    self._send(429, {"error": {"message": "rate limited", "type": "rate_limit"}}, headers)
                    return
                if fault == "401":
                    self._send(401, {"error": {"message": "Invalid API key", "type": "invalid_request_error"}})
                    return
                if fault == "400":
                    self._send(400, {"object": "error", "type": "BadRequestError", "code": 400,
                                     "message": "The model `nope` does not exist."})
                    return
                if fault in ("500", "503"):
                    self._send(int(fault), {"error": {"message": "server busy", "type": "server_error"}})
                    return
                if fault == "drop":
                    self.close_connection = True
                    self.connection.shutdown(2)
                    return
                if fault == "slow":
                    time.sleep(server.slow_seconds)
                if fault == "json":
                    self._send(200, None, raw=b'{"object": "list", "data": [{"embedding": [0.1, ')
                    return
                longest = max(fake_tokens(t) for t in texts)
                if longest > server.max_tokens and server.too_long_status == 413:
                    self._send(413, {"error": f"Input validation error: `inputs` must have less than "
                                              f"{server.max_tokens} tokens. Given: {longest}",
                                     "error_type": "Validation"})
                    return
                if longest > server.max_tokens:
                    self._send(400, {"object": "error", "type": "BadRequestError", "code": 400, "message": (
                        f"This model's maximum context length is {server.max_tokens} tokens. However, you "
                        f"requested {longest} tokens in the input for embedding generation. Please reduce "
                        "the length of the input.")})
                    return
                wants_base64 = body.get("encoding_format") == "base64"
                if wants_base64 and not server.base64:
                    self._send(400, {"object": "error", "message": "encoding_format must be 'float'", "code": 400})
                    return
                dim = body.get("dimensions") or server.dim
                if fault == "dim":
                    dim += 3
                vectors = [fake_vector(t, server.dim)[:dim] if dim <= server.dim else fake_vector(t, dim)
                           for t in texts]
                if fault == "count":
                    vectors = vectors[:-1]
                import base64 as b64

                data = [{"object": "embedding", "index": i,
                         "embedding": b64.b64encode(v.astype("<f4").tobytes()).decode() if wants_base64 else v.tolist()}
                        for i, v in enumerate(vectors)]
                tokens = sum(fake_tokens(t) for t in texts)
                # Counted before the answer leaves (a client may check the count the moment it has the answer),
                # and taken back if it never arrived.
                counted = fault not in ("count", "dim", "slow")
                if counted:
                    with server.lock:
                        server.inputs.append(sent := list(texts))
                delivered = self._send(200, {"object": "list", "data": data, "model": body.get("model"),
                                             "usage": {"prompt_tokens": tokens, "total_tokens": tokens}})
                if counted and not delivered:
                    with server.lock:
                        server.inputs[:] = [batch for batch in server.inputs if batch is not sent]

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> FakeEmbeddingServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def script(self, *faults: str) -> None:
        self.faults.extend(faults)

    @property
    def embedded_texts(self) -> list[str]:
        return [text for batch in self.inputs for text in batch]
