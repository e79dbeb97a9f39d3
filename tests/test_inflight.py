"""The in-flight controller against modelled servers, and the gate that applies it."""

import asyncio

from ingest.inflight import Gate, InFlightLimit


def settle(limit: InFlightLimit, latency, answers: int = 2000, tokens: int = 12_000) -> list[int]:
    """Closed loop: every answer comes back after `latency(in_flight, tokens)`; returns the limits seen."""
    seen = []
    for _ in range(answers):
        limit.succeeded(latency(limit.limit, tokens), tokens)
        seen.append(limit.limit)
    return seen


def one_gpu(in_flight: int, tokens: int) -> float:
    # Continuous batching on one GPU (Qwen3-Embedding-4B on an H200): every request in flight shares the
    # steps, so past one request the latency grows with the work queued and throughput does not.
    return 0.004 + 0.015 + 19e-6 * tokens * in_flight


def sixteen_gpus(in_flight: int, tokens: int) -> float:
    # One URL in front of 16 such servers: latency stays flat until every replica has work.
    return 0.004 + 0.015 + 19e-6 * tokens * max(1.0, in_flight / 16)


def test_a_saturated_server_is_kept_busy_but_not_flooded():
    limit = InFlightLimit(1, 64)
    seen = settle(limit, one_gpu)
    settled = seen[-500:]
    # Enough queued that the GPU never idles between steps (the knee is ~1 request of 12k tokens) ...
    assert min(settled) >= 3
    # ... and far from the ceiling: more would only wait in the server's queue.
    assert max(settled) <= 10
    assert limit.low <= limit.queued() <= limit.high * 1.5


def test_an_endpoint_in_front_of_many_gpus_gets_many_requests():
    limit = InFlightLimit(1, 64)
    seen = settle(limit, sixteen_gpus)
    assert min(seen[-500:]) > 16  # every replica busy
    assert max(seen[-500:]) < 64


def test_small_requests_are_given_more_in_flight_than_big_ones():
    small, big = InFlightLimit(1, 64), InFlightLimit(1, 64)
    settle(small, one_gpu, tokens=500)
    settle(big, one_gpu, tokens=12_000)
    assert small.limit > big.limit


def test_overload_halves_and_the_limit_recovers():
    limit = InFlightLimit(1, 64)
    settle(limit, sixteen_gpus)
    before = limit.limit
    limit.overloaded()
    assert limit.limit == before // 2 or limit.limit == (before + 1) // 2
    for _ in range(5):
        limit.overloaded()
    assert limit.limit == limit.floor
    settle(limit, sixteen_gpus, answers=200)
    assert limit.limit > 16


def test_a_fixed_limit_does_not_move():
    limit = InFlightLimit(8, 8, adaptive=False)
    settle(limit, one_gpu)
    limit.overloaded()
    assert limit.limit == 8 and limit.changes == 0


def test_limits_stay_within_floor_and_ceiling():
    limit = InFlightLimit(100, 12, floor=2)
    assert limit.limit == 12
    settle(limit, lambda n, t: 0.001, answers=50)
    assert limit.limit == 12
    settle(limit, lambda n, t: 10.0 * n, answers=200)  # latency exploding with load
    assert limit.limit <= 6  # at most `high` requests queued
    for _ in range(10):
        limit.overloaded()
    assert limit.limit == 2


def test_gate_follows_a_changing_size():
    async def main() -> list[int]:
        size = [2]
        gate = Gate(lambda: size[0])
        peaks = []

        async def request() -> None:
            await gate.acquire()
            peaks.append(gate.used)
            await asyncio.sleep(0.01)
            await gate.release()

        await asyncio.gather(*(request() for _ in range(10)))
        first = max(peaks)
        size[0] = 5
        peaks.clear()
        await asyncio.gather(*(request() for _ in range(20)))
        return [first, max(peaks)]

    assert asyncio.run(main()) == [2, 5]


def test_mixed_request_sizes_are_not_mistaken_for_queueing():
    # A short request is not slower per token because the server is loaded: it only carries the fixed cost.
    sizes = [12_000, 300, 7_000, 50, 12_000, 2_000]
    flat = InFlightLimit(1, 40)
    for i in range(600):
        tokens = sizes[i % len(sizes)]
        flat.succeeded(0.02 + 1e-6 * tokens, tokens)  # load does not change latency
    assert flat.limit >= 30  # a slope estimated 17% low reads as a little queueing at high limits
    busy = InFlightLimit(1, 64)
    for i in range(2000):
        tokens = sizes[i % len(sizes)]
        busy.succeeded(one_gpu(busy.limit, tokens), tokens)
    assert 3 <= busy.limit <= 12
