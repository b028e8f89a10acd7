"""The scheduler alone, with a fake model: token bound, wait bound, order, a full queue, failures."""
from __future__ import annotations

import asyncio
import time

import pytest

from transferkit.serving.batcher import Batcher, Overloaded


def _recorder(delay: float = 0.0):
    calls: list[list[tuple[str, str]]] = []

    def run(items):
        calls.append([(name, text) for _, name, text in items])
        time.sleep(delay)
        return [f"{kind}:{name}:{text}" for kind, name, text in items]
    return run, calls


def test_requests_share_batches_within_the_token_bound():
    run, calls = _recorder()

    async def main():
        b = Batcher(run, max_batch_tokens=12, max_wait_ms=50)
        b.start()
        results = await asyncio.gather(*[b.submit("classify", [("m", f"t{i}")], 5) for i in range(5)])
        await b.stop()
        return results, b.batches
    results, batches = asyncio.run(main())
    assert results == [[f"classify:m:t{i}"] for i in range(5)]  # each request gets its own results, in order
    assert [len(c) for c in calls] == [2, 2, 1]  # 5 + 5 tokens fit in 12, a third would not
    assert batches == 3


def test_the_first_request_waits_at_most_max_wait_for_company():
    run, calls = _recorder()

    async def main():
        b = Batcher(run, max_batch_tokens=10_000, max_wait_ms=100)
        b.start()
        first = asyncio.ensure_future(b.submit("classify", [("a", "x")], 3))
        await asyncio.sleep(0.02)
        second = asyncio.ensure_future(b.submit("ner", [("b", "y"), ("b", "z")], 3))  # joins the open batch
        t0 = time.perf_counter()
        await asyncio.gather(first, second)
        waited = time.perf_counter() - t0
        late = await b.submit("classify", [("a", "w")], 3)  # alone: a new batch after the wait
        await b.stop()
        return first.result(), second.result(), late, waited
    a, bb, late, waited = asyncio.run(main())
    assert a == ["classify:a:x"] and bb == ["ner:b:y", "ner:b:z"] and late == ["classify:a:w"]
    assert calls[0] == [("a", "x"), ("b", "y"), ("b", "z")]  # one batch, one call for both kinds
    assert len(calls) == 2 and waited < 1.0


def test_a_full_queue_refuses_at_once_and_failures_reach_every_request():
    run, _ = _recorder(delay=0.3)

    async def main():
        b = Batcher(run, max_batch_tokens=1, max_wait_ms=0, max_queue=1)
        b.start()
        busy = asyncio.ensure_future(b.submit("classify", [("m", "1")], 1))
        await asyncio.sleep(0.05)  # the worker is now running it
        queued = asyncio.ensure_future(b.submit("classify", [("m", "2")], 1))
        await asyncio.sleep(0.01)
        with pytest.raises(Overloaded):
            await b.submit("classify", [("m", "3")], 1)
        await asyncio.gather(busy, queued)
        await b.stop()
        return busy.result(), queued.result()
    assert asyncio.run(main()) == (["classify:m:1"], ["classify:m:2"])

    def broken(items):
        raise ValueError("model failed")

    async def failing():
        b = Batcher(broken, max_wait_ms=0)
        b.start()
        with pytest.raises(ValueError, match="model failed"):
            await b.submit("classify", [("m", "x")], 1)
        assert await asyncio.wait_for(b.stop(), 2) is None  # the loop survived the failure and stops cleanly
    asyncio.run(failing())
