"""The scheduler alone, with a fake model: token bound, wait bound, order, a full queue, failures."""
from __future__ import annotations

import asyncio
import threading
import time

import pytest

from transferkit.serving.batcher import Batcher, Overloaded


def _recorder():
    calls: list[list[tuple[str, str]]] = []

    def run(items):
        calls.append([(name, text) for _, name, text in items])
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
        # The second request fills the token bound, which closes the batch; max_wait is a minute, so no
        # stall of this process (a loaded machine) can close the batch before the second request joins it.
        b = Batcher(run, max_batch_tokens=6, max_wait_ms=60_000)
        b.start()
        first = asyncio.ensure_future(b.submit("classify", [("a", "x")], 3))
        await asyncio.sleep(0.02)
        second = asyncio.ensure_future(b.submit("ner", [("b", "y"), ("b", "z")], 3))  # joins the open batch
        await asyncio.wait_for(asyncio.gather(first, second), 30)  # a bound against a hang, not a timing
        await b.stop()
        # Alone, far below the token bound: it waits max_wait for company, then runs in a batch of its own.
        b = Batcher(run, max_batch_tokens=10_000, max_wait_ms=100)
        b.start()
        t0 = time.perf_counter()
        late = await asyncio.wait_for(b.submit("classify", [("a", "w")], 3), 30)
        waited = time.perf_counter() - t0
        await b.stop()
        return first.result(), second.result(), late, waited
    a, bb, late, waited = asyncio.run(main())
    assert a == ["classify:a:x"] and bb == ["ner:b:y", "ner:b:z"] and late == ["classify:a:w"]
    assert calls[0] == [("a", "x"), ("b", "y"), ("b", "z")]  # one batch, one call for both kinds
    assert len(calls) == 2 and waited >= 0.09  # it waited for company (a lower bound, which no load can break)


def test_a_full_queue_refuses_at_once_and_failures_reach_every_request():
    running, release = threading.Event(), threading.Event()

    def held(items):  # a batch that runs until the test lets it end, however slow the machine
        running.set()
        release.wait(60)
        return [f"{kind}:{name}:{text}" for kind, name, text in items]

    async def main():
        b = Batcher(held, max_batch_tokens=1, max_wait_ms=0, max_queue=1)
        b.start()
        busy = asyncio.ensure_future(b.submit("classify", [("m", "1")], 1))
        try:
            assert await asyncio.to_thread(running.wait, 60)  # the worker is now running it
            queued = asyncio.ensure_future(b.submit("classify", [("m", "2")], 1))
            await asyncio.sleep(0)  # the second request's task runs first: it enters the queue
            assert b.depth == 1
            with pytest.raises(Overloaded):
                await b.submit("classify", [("m", "3")], 1)
        finally:
            release.set()
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
        assert await asyncio.wait_for(b.stop(), 30) is None  # the loop survived the failure and stops cleanly
    asyncio.run(failing())
