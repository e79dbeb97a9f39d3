"""A simulated SGLang-like embedding server: the real API, a GPU's timing, no GPU.

Continuous batching as SGLang and vLLM do it: requests queue up; each scheduler step takes up to
`step_tokens` tokens from the head of the queue (a long request is prefilled over several steps) and
lasts `c0 + c1 * tokens` seconds, calibrated to Qwen3-Embedding on one H200 (the calibration and what it
gives: docs/benchmarks.md). A request is answered when its last token has been through a step.

Speaks `POST /v1/embeddings` (float or base64), SGLang's `POST /v1/tokenize`, `GET /v1/models`, and
`GET /stats` with what it did, so a benchmark can report throughput as a share of the capacity;
`GET /received` lists the last inputs exactly as they arrived (for tests of what a client sends).
Tokens are counted with the real Qwen3 tokenizer plus the `<|endoftext|>` Qwen3-Embedding appends.

With `--strict`, it answers where it matters to a client exactly as SGLang does
(sglang/srt/managers/tokenizer_manager.py, entrypoints/openai/serving_embedding.py, serving_tokenize.py):
- `dimensions` only for a model declared Matryoshka (`--matryoshka`, or `--matryoshka-dimensions 32,64`
  for SGLang's `--json-model-override-args '{"matryoshka_dimensions": [...]}'`), else HTTP 400
  "Model '...' does not support matryoshka representation, changing output dimensions will lead to poor
  results."; allowed dimensions are truncated and re-normalised;
- an input of `max_model_len` tokens or more: HTTP 400 "The input (N tokens) is longer than the model's
  context length (L tokens)." for the whole request (SGLang compares with `>=`: an input of exactly the
  context length is refused too).
Without `--strict` (bench.run's default) it honours any `dimensions` and refuses inputs over the limit with
a message naming the maximum context length. Always as SGLang: the flat error body
`{"object": "error", "message", "type", "param", "code"}`, HTTP 400 for an empty or whitespace-only input,
and `POST /v1/tokenize` (or `/tokenize`) {prompt: str | [str], add_special_tokens} -> {tokens, count,
max_model_len}. Vectors are random but a function of the input text: the same text gets the same vector.

    python -m bench.simserver --port 30000 --model-size 4b [--strict [--matryoshka]] [--max-model-len 32768]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Callable

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
                 dim: int | None = None, speed: float = 1.0, matryoshka: bool = False,
                 matryoshka_dimensions: list[int] | None = None, served_model_name: str | None = None,
                 strict: bool = False, remember: int = 64,
                 vectors: Callable[[list[str]], np.ndarray] | None = None) -> None:
        profile = PROFILES[model_size]
        self.model = served_model_name or profile["model"]
        self.strict = strict  # SGLang's own dimensions gate, over-length text and comparison
        # SGLang: a model is Matryoshka if it declares matryoshka_dimensions or is_matryoshka.
        self.matryoshka_dimensions = list(matryoshka_dimensions) if matryoshka_dimensions else None
        self.matryoshka = bool(matryoshka or self.matryoshka_dimensions or not strict)
        self.received: deque[dict] = deque(maxlen=remember)  # the last requests' inputs, as they arrived
        self.c0, self.c1 = profile["c0"] / speed, profile["c1"] / speed
        self.dim = dim or profile["dim"]
        self._vectors = vectors  # a real model's vectors (wordllama_vectors) instead of random ones
        self.step_tokens = step_tokens
        self.max_model_len = max_model_len
        self.queue: deque[_Request] = deque()
        self.wakeup: asyncio.Event | None = None
        self.stats = Stats()
        from ingest.tokens import qwen3_counter

        # A real server tokenises on its own host; here its CPU is the client's, so it counts with the
        # same ids from the cheaper engine (ingest.tokens._TiktokenTwin).
        self._counter = qwen3_counter()

    @property
    def capacity(self) -> float:
        """Tokens/s when every step is full."""
        return self.step_tokens / (self.c0 + self.c1 * self.step_tokens)

    def count(self, texts: list[str]) -> list[int]:
        return [self._counter.count(text) for text in texts]

    def encode(self, texts: list[str], add_special_tokens: bool = True) -> list[list[int]]:
        """Token ids as Qwen3-Embedding's tokenizer gives them: `<|endoftext|>` appended unless told not to."""
        return [self._counter.ids(text) + ([ENDOFTEXT_ID] if add_special_tokens else []) for text in texts]

    def check_dimensions(self, dimensions: int | None) -> None:
        """SGLang's `_validate_for_matryoshka_dim`, in its order and words."""
        if dimensions is None:
            return
        if not self.matryoshka:
            raise ValueError(
                f"Model '{self.model}' does not support matryoshka representation, "
                "changing output dimensions will lead to poor results."
            )
        if dimensions < 1:
            raise ValueError("Requested dimensions must be greater than 0")
        if self.matryoshka_dimensions and dimensions not in self.matryoshka_dimensions:
            raise ValueError(
                f"Model '{self.model}' only supports {self.matryoshka_dimensions} matryoshka dimensions, "
                "using other output dimensions will lead to poor results."
            )
        if dimensions > self.dim:
            raise ValueError(f"Provided dimensions are greater than max embedding dimension: {self.dim}")

    def vectors(self, texts: list[str]) -> np.ndarray:
        """Unit vectors, each a function of its text (seeded by a hash of it), or the real model's."""
        if self._vectors is not None:
            return self._vectors(texts)
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        for row, text in enumerate(texts):
            digest = hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=8).digest()
            seed = int.from_bytes(digest, "little")
            out[row] = np.random.default_rng(seed).standard_normal(self.dim, dtype=np.float32)
        return out / np.linalg.norm(out, axis=1, keepdims=True)

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

    async def embed(self, texts: list[str], dimensions: int | None = None) -> np.ndarray:
        """Vectors for `texts` once the simulated GPU has been through them; ValueError for what SGLang refuses."""
        return (await self.embed_counted(texts, dimensions))[0]

    async def embed_counted(self, texts: list[str], dimensions: int | None = None) -> tuple[np.ndarray, int]:
        """`embed`, and the tokens the inputs took (the answer's `usage`)."""
        if self.stats.first_request is None:  # when it arrived, before the server's own tokenising
            self.stats.first_request = time.monotonic()
        counts = await asyncio.to_thread(self.count, texts)
        for count in counts:
            if self.strict and count >= self.max_model_len:  # SGLang's own comparison and words
                raise ValueError(
                    f"The input ({count} tokens) is longer than the model's context length "
                    f"({self.max_model_len} tokens)."
                )
            if count > self.max_model_len:
                raise ValueError(
                    f"Input length {count} exceeds the maximum context length {self.max_model_len} "
                    "(This model's maximum context length is exceeded; reduce the length of the input)"
                )
        self.check_dimensions(dimensions)
        request = _Request(sum(counts), sum(counts), asyncio.get_running_loop().create_future())
        self.stats.requests += 1
        self.stats.inputs += len(texts)
        self.queue.append(request)
        assert self.wakeup is not None
        self.wakeup.set()
        await request.done
        vectors = self.vectors(texts)
        if dimensions:
            vectors = vectors[:, :dimensions]
            vectors = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
        return vectors, sum(counts)

    def report(self) -> dict:
        stats = self.stats
        window = (stats.last_answer or time.monotonic()) - (stats.first_request or stats.started)
        return {
            "model": self.model, "capacity_tokens_per_s": round(self.capacity), "requests": stats.requests,
            "inputs": stats.inputs, "tokens": stats.tokens, "steps": stats.steps, "busy_s": round(stats.busy, 3),
            "window_s": round(window, 3),
            # On the machine's monotonic clock, which every process shares: for bench.startend.
            "first_request_at": stats.first_request, "last_answer_at": stats.last_answer,
            "tokens_per_s": round(stats.tokens / window) if window > 0 else 0,
            "share_of_capacity": round(stats.tokens / window / self.capacity, 4) if window > 0 else 0.0,
        }

    def reset(self) -> None:
        self.stats = Stats()
        self.received.clear()

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
        elif method == "POST" and path in ("/v1/tokenize", "/tokenize"):  # SGLang serves both
            await self._tokenize(orjson.loads(body or b"{}"), send)
        elif path == "/received":
            await _json(send, 200, list(self.received))
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

    async def _tokenize(self, request: dict, send) -> None:  # noqa: ANN001
        prompt = request.get("prompt")
        add_special = request.get("add_special_tokens", True)
        if isinstance(prompt, str):
            tokens: list = self.encode([prompt], add_special)[0]
            count: int | list[int] = len(tokens)
        elif isinstance(prompt, list) and all(isinstance(p, str) for p in prompt):
            tokens = self.encode(prompt, add_special) if prompt else []
            count = [len(ids) for ids in tokens]
        else:
            await _error(send, f"Invalid prompt type: {type(prompt)}. Expected str or List[str].")
            return
        # SGLang answers the effective context length (model_config.context_len).
        await _json(send, 200, {"tokens": tokens, "count": count, "max_model_len": self.max_model_len})

    async def _embeddings(self, request: dict, send) -> None:  # noqa: ANN001
        texts = request.get("input")
        problem = _validate_input(texts)
        if problem:
            await _error(send, problem)
            return
        texts = [texts] if isinstance(texts, str) else texts
        dimensions = request.get("dimensions")
        self.received.append({"input": list(texts), "dimensions": dimensions})
        try:
            vectors, tokens = await self.embed_counted(texts, dimensions)
        except ValueError as exc:
            await _error(send, str(exc))
            return
        as_base64 = request.get("encoding_format") == "base64"
        data = [
            {"object": "embedding", "index": i,
             "embedding": base64.b64encode(v.astype(np.float32).tobytes()).decode() if as_base64 else v.tolist()}
            for i, v in enumerate(vectors)
        ]
        await _json(send, 200, {"object": "list", "data": data, "model": self.model,
                                "usage": {"prompt_tokens": tokens, "total_tokens": tokens}})


ENDOFTEXT_ID = 151643  # Qwen3's <|endoftext|>, appended by Qwen3-Embedding's tokenizer


def _validate_input(texts: object) -> str | None:
    """SGLang's EmbeddingHandler._validate_request for text inputs."""
    if not texts:
        return "Input cannot be empty"
    if isinstance(texts, str):
        return None if texts.strip() else "Input cannot be empty or whitespace only"
    if not isinstance(texts, list):
        return "input must be a string or a list of strings"
    for index, item in enumerate(texts):
        if not isinstance(item, str):
            return "All items in input list must be strings"
        if not item.strip():
            return f"Input at index {index} cannot be empty or whitespace only"
    return None


async def _error(send, message: str, status: int = 400, kind: str = "BadRequestError") -> None:  # noqa: ANN001
    """SGLang's error body: flat, not nested under "error"."""
    await _json(send, status, {"object": "error", "message": message, "type": kind, "param": None, "code": status})


async def _json(send, status: int, payload: object) -> None:  # noqa: ANN001
    body = orjson.dumps(payload, option=orjson.OPT_SERIALIZE_NUMPY)
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


WORDLLAMA = "wordllama-l2-supercat-256"


def wordllama_vectors() -> Callable[[list[str]], np.ndarray]:
    """WordLlama's bundled 256-d model (PyPI `wordllama`, kb's bench extra): a static word-embedding model
    trained with Matryoshka loss, so a prefix of its vectors is meant to stand on its own. English."""
    from pathlib import Path

    import wordllama

    # The wheel ships its tokenizer under tokenizers/ while load() looks in tokenizer/ (and then on the
    # Hugging Face hub): pointing cache_dir at the package makes it find both files offline.
    model = wordllama.WordLlama.load(cache_dir=Path(wordllama.__file__).parent)
    return lambda texts: np.asarray(model.embed(texts, norm=True), dtype=np.float32)


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
    parser.add_argument("--strict", action="store_true",
                        help="refuse `dimensions` and over-length input exactly as SGLang does")
    parser.add_argument("--matryoshka", action="store_true",
                        help="with --strict: honour `dimensions` (1..dim), as for a model declared Matryoshka")
    parser.add_argument("--matryoshka-dimensions", default=None,
                        help="comma-separated dimensions the model declares (SGLang's matryoshka_dimensions)")
    parser.add_argument("--served-model-name", default=None, help="model id to answer with")
    parser.add_argument("--vectors", choices=["random", "wordllama"], default="random",
                        help="wordllama: real vectors from WordLlama's 256-d Matryoshka model (for quality runs)")
    args = parser.parse_args(argv)
    real = wordllama_vectors() if args.vectors == "wordllama" else None
    if real is not None:
        args.dim, args.matryoshka = 256, True
        args.served_model_name = args.served_model_name or WORDLLAMA
    declared = [int(d) for d in args.matryoshka_dimensions.split(",")] if args.matryoshka_dimensions else None
    simulator = Simulator(args.model_size, args.step_tokens, args.max_model_len, args.dim, args.speed,
                          matryoshka=args.matryoshka, matryoshka_dimensions=declared,
                          served_model_name=args.served_model_name, strict=args.strict, vectors=real)
    print(f"simulated {simulator.model}: {simulator.capacity:,.0f} tokens/s at saturation, "
          f"on http://{args.host}:{args.port}/v1", flush=True)
    uvicorn.run(simulator.app, host=args.host, port=args.port, log_level="warning", lifespan="on", interface="asgi3")


if __name__ == "__main__":
    main()
