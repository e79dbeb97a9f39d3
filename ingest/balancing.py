"""Spreading requests over several embedding endpoints: each request goes to the healthy endpoint with the
least work in flight, and an endpoint that fails is backed off (exponentially, on its own) so that retries
go to the others while it recovers.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from .http import backoff
from .inflight import InFlightLimit


@dataclass
class Endpoint:
    """One server URL, its client, and what the balancer knows about it."""

    url: str
    client: Any = None  # the openai client, made for the event loop in `loop`
    loop: Any = None  # connections cannot cross event loops (a UI runs one a query)
    limit: InFlightLimit = field(default_factory=lambda: InFlightLimit(8, 8, adaptive=False))
    outstanding: int = 0  # characters in flight, to balance several endpoints
    active: int = 0  # requests in flight
    failures: int = 0  # transient failures in a row
    down_until: float = 0.0  # monotonic time before which other endpoints are preferred

    @contextmanager
    def carrying(self, weight: int) -> Iterator[None]:
        """Count a request (of `weight` characters) as in flight here while it runs."""
        self.outstanding += weight
        self.active += 1
        try:
            yield
        finally:
            self.outstanding -= weight
            self.active -= 1

    def failed(self, base: float, cap: float) -> None:
        """Back this endpoint off so retries go to the others."""
        self.failures += 1
        self.down_until = time.monotonic() + backoff(self.failures, base, cap, floor=0.5)

    def pushed_back(self, base: float, cap: float) -> None:
        """The server is overloaded or gone (a transient status, a timeout, a dropped connection): back off
        and halve what is kept in flight here."""
        self.failed(base, cap)
        self.limit.overloaded()

    def succeeded(self) -> None:
        self.failures, self.down_until = 0, 0.0

    def is_up(self, now: float) -> bool:
        return self.down_until <= now


def pick(endpoints: Sequence[Endpoint]) -> Endpoint:
    """The healthy endpoint with the least work in flight; if all are backed off, the one back soonest
    (that request is the probe that tells whether it has recovered)."""
    now = time.monotonic()
    healthy = [e for e in endpoints if e.is_up(now)]
    if healthy:
        # Least work relative to what the endpoint has shown it can take.
        return min(healthy, key=lambda e: (e.active >= e.limit.limit, e.outstanding / e.limit.limit))
    return min(endpoints, key=lambda e: e.down_until)


def total_limit(endpoints: Sequence[Endpoint]) -> int:
    """The sum of the endpoints' learnt limits; endpoints backed off after failures count for one probe."""
    now = time.monotonic()
    return sum(e.limit.limit if e.is_up(now) else 1 for e in endpoints)
