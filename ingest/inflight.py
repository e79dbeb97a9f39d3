"""How many embedding requests to keep in flight, learnt from the server's answers.

A continuous-batching server (SGLang, vLLM) answers faster per token when it has work queued than
when it idles between requests, up to the point where its GPU is busy: past that point more requests
in flight only wait in its queue, which adds latency and client memory and starves other endpoints.

`InFlightLimit` finds that point per endpoint with TCP Vegas' rule, as Netflix's concurrency-limits
library applies it to servers. The server's unloaded latency for a request of `t` tokens is estimated
from the fastest answers seen, as a fixed part (the fastest answer of all) plus the lowest cost per
token above it; with `limit` requests in flight answering at a smoothed `unloaded / latency` ratio `u`,
`limit * (1 - u)` of them are queued at the server. The limit grows while fewer than ~3 are queued
(the GPU may idle between steps) and shrinks while more than ~6 are (they only wait); both bounds grow
with log10(limit), so an endpoint that is a load balancer in front of many GPUs gets many requests.
Overload answers (429, 503, timeouts, dropped connections) halve the limit.

`Gate` is the semaphore the pipeline takes before sending a request; its size follows the limits.
"""

from __future__ import annotations

import asyncio
import math
from typing import Callable


class InFlightLimit:
    """The number of requests worth keeping in flight at one endpoint."""

    def __init__(self, initial: int, ceiling: int, *, floor: int = 1, low: float = 3.0, high: float = 6.0,
                 adaptive: bool = True, smoothing: float = 0.3) -> None:
        self.floor, self.ceiling = max(1, min(floor, ceiling)), ceiling
        self._limit = float(max(self.floor, min(initial, ceiling)))
        self.low, self.high, self.adaptive, self.smoothing = low, high, adaptive, smoothing
        self.fixed: float | None = None  # the fastest answer seen, seconds
        self.per_token: float | None = None  # the lowest cost per token above it
        self.ratio = 1.0  # smoothed unloaded / observed latency: 1 while nothing waits at the server
        self.peak = int(self._limit)
        self.changes = 0

    @property
    def limit(self) -> int:
        return int(self._limit)

    def queued(self) -> float:
        """Requests estimated to be waiting in the server's queue rather than being computed."""
        return self._limit * max(0.0, 1.0 - self.ratio)

    def succeeded(self, seconds: float, tokens: int) -> None:
        if not self.adaptive or tokens <= 0 or seconds <= 0:
            return
        self.fixed = seconds if self.fixed is None else min(self.fixed, seconds)
        slope = (seconds - self.fixed) / tokens
        self.per_token = slope if self.per_token is None else min(self.per_token, slope)
        unloaded = min(seconds, self.fixed + self.per_token * tokens)
        self.ratio = self.smoothing * (unloaded / seconds) + (1 - self.smoothing) * self.ratio
        queued = self.queued()
        scale = max(1.0, math.log10(self._limit))
        # One step per answer: with `limit` answers a round trip, the limit can double per round trip
        # while the server has room, and falls back as fast once requests only queue.
        if queued < self.low * scale:
            self._set(self._limit + 1)
        elif queued > self.high * scale:
            self._set(self._limit - 1)

    def overloaded(self) -> None:
        """The server pushed back (429/503, timeout, dropped connection): halve."""
        if self.adaptive:
            self._set(self._limit / 2)

    def _set(self, value: float) -> None:
        value = max(float(self.floor), min(float(self.ceiling), value))
        if int(value) != int(self._limit):
            self.changes += 1
        self._limit = value
        self.peak = max(self.peak, int(value))


class Gate:
    """A semaphore whose size is read at every acquire: the embedder's current in-flight limit.

    Limits only grow on answers, and an answer releases a slot, which wakes the waiters to re-read it.
    """

    def __init__(self, size: Callable[[], int]) -> None:
        self._size = size
        self._used = 0
        self._changed = asyncio.Condition()

    @property
    def used(self) -> int:
        return self._used

    async def acquire(self) -> None:
        async with self._changed:
            await self._changed.wait_for(lambda: self._used < max(1, self._size()))
            self._used += 1

    async def release(self) -> None:
        async with self._changed:
            self._used -= 1
            self._changed.notify_all()
