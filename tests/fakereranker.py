"""A fault-injecting rerank server, for what the real one (tests/rigs/vllm_reranker.py) can't do on demand.

It speaks the rerank APIs as vLLM and SGLang answer them (bodies captured from vLLM 0.32 and read from SGLang's
serving_rerank.py): `POST /v1/rerank` and `/rerank` -> {"results": [{"index", "relevance_score", "document"}]}
sorted best first (`shape="sglang"`: a bare list of {"index", "score", "document"}), `POST /v1/score` and
`/score` -> {"data": [{"index", "score"}]} in input order. A document's score is the share of the query's
words it contains: a ranking a test can predict. Faults, one per request: "429", "429:1" (Retry-After 1 s),
"503", "drop", "404" (vLLM's unknown model), "json".
"""

from __future__ import annotations

import json
import re
import threading
from collections import deque
from http.server import ThreadingHTTPServer

from tests.fakeserver import JsonHandler


def overlap_score(query: str, document: str) -> float:
    words = set(re.findall(r"\w+", query.lower()))
    found = set(re.findall(r"\w+", document.lower()))
    return len(words & found) / max(1, len(words))


class FakeReranker:
    def __init__(self, model: str = "fake-reranker", shape: str = "vllm") -> None:
        self.model = model
        self.shape = shape
        self.faults: deque[str] = deque()
        self.bodies: list[dict] = []
        self.paths: list[str] = []
        self.lock = threading.Lock()
        server = self

        class Handler(JsonHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
                with server.lock:
                    server.bodies.append(body)
                    server.paths.append(self.path)
                    fault = server.faults.popleft() if server.faults else "ok"
                if fault.startswith("429"):
                    headers = {"Retry-After": fault.split(":")[1]} if ":" in fault else {}
                    self._send(429, {"error": {"message": "rate limited"}}, headers)
                    return
                if fault == "503":
                    self._send(503, {"error": {"message": "server busy"}})
                    return
                if fault == "drop":
                    self.close_connection = True
                    self.connection.shutdown(2)
                    return
                if fault == "json":
                    self._send(200, None, raw=b'{"results": [{"index": 0, ')
                    return
                if fault == "404" or body.get("model") not in (None, server.model):
                    self._send(404, {"error": {"message": f"The model `{body.get('model')}` does not exist.",
                                               "type": "NotFoundError", "param": None, "code": 404}})
                    return
                if self.path.endswith("/score"):
                    documents = body["text_2"]
                    scores = [overlap_score(body["text_1"], d) for d in documents]
                    self._send(200, {"object": "list", "model": server.model, "data": [
                        {"index": i, "object": "score", "score": s} for i, s in enumerate(scores)]})
                    return
                if not self.path.endswith("/rerank"):
                    self._send(404, {"detail": "Not Found"})
                    return
                documents = body["documents"]
                ranked = sorted(((overlap_score(body["query"], d), i) for i, d in enumerate(documents)),
                                key=lambda pair: -pair[0])[: body.get("top_n") or len(documents)]
                if server.shape == "sglang":
                    self._send(200, [{"score": s, "document": documents[i], "index": i} for s, i in ranked])
                else:
                    self._send(200, {"id": "score-1", "model": server.model,
                                     "usage": {"prompt_tokens": 1, "total_tokens": 1},
                                     "results": [{"index": i, "document": {"text": documents[i]},
                                                  "relevance_score": s} for s, i in ranked]})

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> FakeReranker:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
