"""A simulated SGLang-like embedding server: the real API, a GPU's timing, no GPU.

Continuous batching as SGLang and vLLM do it: requests queue up; each scheduler step takes up to
`step_tokens` tokens from the head of the queue (a long request is prefilled over several steps) and
lasts `c0 + c1 * tokens` seconds, calibrated to Qwen3-Embedding on one H200 (../shared/notes/serving.md:
4B saturates near 50k tokens/s). A request is answered when its last token has been through a step.

Speaks `POST /v1/embeddings` (float or base64), SGLang's `POST /v1/tokenize`, `GET /v1/models`, and
`GET /stats` with what it did, so a benchmark can report throughput as a share of the capacity.
Inputs over `max_model_len` get the HTTP 400 a real server gives. Tokens are counted with the real
Qwen3 tokenizer plus the `<|endoftext|>` Qwen3-Embedding appends.

    python -m bench.simserver --port 30000 --model-size 4b
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import time
from collections import deque
from dataclasses import dataclass, field

import numpy as np
import orjson

# Per-step cost: c0 (launch, scheduling) + c1 per token, from the H200 measurements.
PROFILES = {
    "0.6b": {"c0": 0.015, "c1": 5e-6, "dim": 1024, "model": "Qwen/Qwen3-Embedding-0.6B"},
    "4b": {"c0": 0.015, "c1": 19e-6, "dim": 2560, "model": "Qwen/Qwen3-Embedding-4B"},
    "8b": {"c0": 0.015, "c1": 30e-6, "dim": 4096, "model": "Qwen/Qwen3-Embedding-8B"},
}


@dataclass
class _Request:
    tokens: int
    left: int
    done: asyncio.Future


@dataclass
class Stats:
    requests: int = 0
    inputs: int = 0
    tokens: int = 0
    steps: int = 0
    busy: float = 0.0  # seconds the simulated GPU was computing
    started: float = field(default_factory=time.monotonic)
    first_request: float | None = None
    last_answer: float | None = None


class Simulator:
    """The scheduler and the cost model; `app` is the ASGI application serving it."""

    def __init__(self, model_size: str = "4b", step_tokens: int = 16384, max_model_len: int = 32768,
                 dim: int | None = None, speed: float = 1.0) -> None:
        profile = PROFILES[model_size]
        self.model = profile["model"]
        self.c0, self.c1 = profile["c0"] / speed, profile["c1"] / speed
        self.dim = dim or profile["dim"]
        self.step_tokens = step_tokens
        self.max_model_len = max_model_len
        self.queue: deque[_Request] = deque()
        self.wakeup: asyncio.Event | None = None
        self.stats = Stats()
        from ingest.tokens import qwen3_counter

        self._tokenizer = qwen3_counter()._tok
        self._rng = np.random.default_rng(0)

    @property
    def capacity(self) -> float:
        """Tokens/s when every step is full."""
        return self.step_tokens / (self.c0 + self.c1 * self.step_tokens)

    def count(self, texts: list[str]) -> list[int]:
        return [len(e.ids) + 1 for e in self._tokenizer.encode_batch(texts, add_special_tokens=True)]

    async def scheduler(self) -> None:
        self.wakeup = asyncio.Event()
        while True:
            if not self.queue:
                self.wakeup.clear()
                await self.wakeup.wait()
            budget, taken = self.step_tokens, []
            while self.queue and budget > 0:
                request = self.queue[0]
                used = min(request.left, budget)
                request.left -= used
                budget -= used
                taken.append((request, used))
                if request.left == 0:
                    self.queue.popleft()
                else:
                    break  # chunked prefill: the rest of this request goes in the next step
            tokens = self.step_tokens - budget
            duration = self.c0 + self.c1 * tokens
            await asyncio.sleep(duration)
            self.stats.steps += 1
            self.stats.busy += duration
            self.stats.tokens += tokens
            now = time.monotonic()
            for request, _ in taken:
                if request.left == 0 and not request.done.done():
                    request.done.set_result(None)
                    self.stats.last_answer = now

    async def embed(self, texts: list[str]) -> np.ndarray:
        counts = await asyncio.to_thread(self.count, texts)
        longest = max(counts)
        if longest > self.max_model_len:
            raise ValueError(
                f"Input length {longest} exceeds the maximum context length {self.max_model_len} "
                "(This model's maximum context length is exceeded; reduce the length of the input)"
            )
        request = _Request(sum(counts), sum(counts), asyncio.get_running_loop().create_future())
        if self.stats.first_request is None:
            self.stats.first_request = time.monotonic()
        self.stats.requests += 1
        self.stats.inputs += len(texts)
        self.queue.append(request)
        assert self.wakeup is not None
        self.wakeup.set()
        await request.done
        vectors = self._rng.standard_normal((len(texts), self.dim), dtype=np.float32)
        return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)

    def report(self) -> dict:
        stats = self.stats
        window = (stats.last_answer or time.monotonic()) - (stats.first_request or stats.started)
        return {
            "model": self.model, "capacity_tokens_per_s": round(self.capacity), "requests": stats.requests,
            "inputs": stats.inputs, "tokens": stats.tokens, "steps": stats.steps, "busy_s": round(stats.busy, 3),
            "window_s": round(window, 3),
            "tokens_per_s": round(stats.tokens / window) if window > 0 else 0,
            "share_of_capacity": round(stats.tokens / window / self.capacity, 4) if window > 0 else 0.0,
        }

    def reset(self) -> None:
        self.stats = Stats()

    # -- ASGI ----------------------------------------------------------------------------------

    async def app(self, scope, receive, send) -> None:  # noqa: ANN001 - the ASGI interface
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    asyncio.get_running_loop().create_task(self.scheduler())
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        path, method = scope["path"], scope["method"]
        if method == "POST" and path in ("/v1/embeddings", "/embeddings"):
            await self._embeddings(orjson.loads(body or b"{}"), send)
        elif method == "POST" and path in ("/v1/tokenize", "/tokenize"):
            prompt = orjson.loads(body or b"{}").get("prompt", "")
            count = self.count([prompt])[0]
            await _json(send, 200, {"tokens": [], "count": count, "max_model_len": self.max_model_len})
        elif path in ("/v1/models", "/models"):
            await _json(send, 200, {"object": "list", "data": [{"id": self.model, "object": "model"}]})
        elif path == "/stats":
            await _json(send, 200, self.report())
        elif path == "/reset" and method == "POST":
            self.reset()
            await _json(send, 200, {"ok": True})
        elif path in ("/health", "/"):
            await _json(send, 200, {"status": "ok"})
        else:
            await _json(send, 404, {"error": {"message": f"no route {path}"}})

    async def _embeddings(self, request: dict, send) -> None:  # noqa: ANN001
        texts = request.get("input")
        texts = [texts] if isinstance(texts, str) else texts
        if not isinstance(texts, list) or not texts or not all(isinstance(t, str) for t in texts):
            await _json(send, 400, {"object": "error", "message": "input must be a string or a list of strings"})
            return
        try:
            vectors = await self.embed(texts)
        except ValueError as exc:
            await _json(send, 400, {"object": "error", "type": "BadRequestError", "code": 400, "message": str(exc)})
            return
        dimensions = request.get("dimensions")
        if dimensions:
            vectors = vectors[:, :dimensions] / np.linalg.norm(vectors[:, :dimensions], axis=1, keepdims=True)
        as_base64 = request.get("encoding_format") == "base64"
        data = [
            {"object": "embedding", "index": i,
             "embedding": base64.b64encode(v.astype(np.float32).tobytes()).decode() if as_base64 else v.tolist()}
            for i, v in enumerate(vectors)
        ]
        await _json(send, 200, {"object": "list", "data": data, "model": self.model,
                                "usage": {"prompt_tokens": 0, "total_tokens": 0}})


async def _json(send, status: int, payload: object) -> None:  # noqa: ANN001
    body = orjson.dumps(payload, option=orjson.OPT_SERIALIZE_NUMPY)
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


def main(argv: list[str] | None = None) -> None:
    import uvicorn

    parser = argparse.ArgumentParser(prog="python -m bench.simserver", description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=30000)
    parser.add_argument("--model-size", choices=sorted(PROFILES), default="4b")
    parser.add_argument("--step-tokens", type=int, default=16384)
    parser.add_argument("--max-model-len", type=int, default=32768)
    parser.add_argument("--dim", type=int, default=None, help="vector dimension (default: the model's)")
    parser.add_argument("--speed", type=float, default=1.0, help="multiply the simulated GPU's speed")
    args = parser.parse_args(argv)
    simulator = Simulator(args.model_size, args.step_tokens, args.max_model_len, args.dim, args.speed)
    print(f"simulated {simulator.model}: {simulator.capacity:,.0f} tokens/s at saturation, "
          f"on http://{args.host}:{args.port}/v1", flush=True)
    uvicorn.run(simulator.app, host=args.host, port=args.port, log_level="warning", lifespan="on", interface="asgi3")


if __name__ == "__main__":
    main()
