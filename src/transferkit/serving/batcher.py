"""One scheduler for every request the server takes: dynamic batching across requests and tasks.

Requests wait in one queue whatever run they name. The worker takes the oldest, then keeps taking
requests until the batch holds `max_batch_tokens` tokens or `max_wait_ms` has passed since the
first one arrived, and hands the whole batch to `run` in a worker thread (inference is blocking
torch code; one thread keeps the machine's cores for the matmuls). `run` gets every (kind, run,
text) of the batch in one call, so texts for different tasks on one base share an encoder pass; its
results are split back to the requests in order. A full queue (`max_queue` requests waiting)
refuses new requests at once (`Overloaded`, a 429 for the client) instead of letting latency grow
without bound. Written here because neither FastAPI nor uvicorn batches across requests.
"""
from __future__ import annotations

import asyncio
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence


class Overloaded(Exception):
    """The queue is full: the client should retry later."""


class ShuttingDown(Exception):
    """The server stops taking requests (SIGTERM): finish elsewhere."""


@dataclass
class Job:
    kind: str  # the task whose route took the request
    pairs: list[tuple[str, str]]  # (run name, text)
    tokens: int
    future: asyncio.Future
    arrived: float = field(default_factory=time.perf_counter)


class Batcher:
    """`await batcher.submit(kind, pairs, tokens)` -> one result per pair, computed in a shared batch.

    `run(items)` computes one result per (kind, run, text) item; it is called in a worker thread
    once per batch, with every item of every request in it."""

    def __init__(self, run: Callable[[list[tuple[str, str, str]]], list[Any]], max_batch_tokens: int = 16384,
                 max_wait_ms: float = 5.0, max_queue: int = 512, on_batch: Callable[[int, int], None] | None = None):
        self.run, self.on_batch = run, on_batch
        self.max_batch_tokens, self.max_wait, self.max_queue = max_batch_tokens, max_wait_ms / 1000, max_queue
        self.queue: deque[Job] = deque()
        self.batches = 0  # batches run so far (tests and /metrics read it)
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task | None = None
        self._closing = False
        # One inference thread: torch's own threads use the cores, and one thread keeps one malloc
        # arena (the default pool spreads batches over many threads, whose arenas grew RSS 13% in
        # the 10,000-request load test).
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="transferkit-infer")

    @property
    def depth(self) -> int:
        return len(self.queue)

    def start(self) -> None:
        self._wake = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(self._loop())

    async def stop(self) -> None:
        """Finish what is queued, then stop."""
        self._closing = True
        if self._wake is not None:
            self._wake.set()
        if self._task is not None:
            await self._task

    async def submit(self, kind: str, pairs: Sequence[tuple[str, str]], tokens: int) -> list[Any]:
        if self._task is None or self._task.done():
            raise ShuttingDown("the scheduler is not running")
        if self._closing:
            raise ShuttingDown("the server is shutting down")
        if len(self.queue) >= self.max_queue:
            raise Overloaded(f"{len(self.queue)} requests are waiting (the limit is {self.max_queue})")
        job = Job(kind, list(pairs), tokens, asyncio.get_running_loop().create_future())
        self.queue.append(job)
        self._wake.set()
        return await job.future

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if not self.queue:
                if self._closing:
                    self._executor.shutdown(wait=True)
                    return
                self._wake.clear()
                await self._wake.wait()
                continue
            # Gather: wait for company until the token budget is met or the oldest has waited long enough.
            while (sum(j.tokens for j in self.queue) < self.max_batch_tokens and not self._closing
                   and time.perf_counter() - self.queue[0].arrived < self.max_wait):
                self._wake.clear()
                try:
                    await asyncio.wait_for(self._wake.wait(),
                                           self.max_wait - (time.perf_counter() - self.queue[0].arrived))
                except asyncio.TimeoutError:
                    break
            batch = [self.queue.popleft()]
            tokens = batch[0].tokens
            while self.queue and tokens + self.queue[0].tokens <= self.max_batch_tokens:
                tokens += self.queue[0].tokens
                batch.append(self.queue.popleft())
            batch = [j for j in batch if not j.future.done()]  # a client that went away costs nothing
            if not batch:
                continue
            self.batches += 1
            try:
                if self.on_batch is not None:
                    self.on_batch(sum(len(j.pairs) for j in batch), tokens)
                results = await loop.run_in_executor(self._executor, self._run_batch, batch)
            except Exception as e:  # noqa: BLE001 - every waiting request gets the failure, the loop goes on
                for j in batch:
                    if not j.future.done():
                        j.future.set_exception(e)
                continue
            for j, r in zip(batch, results):
                if not j.future.done():
                    j.future.set_result(r)

    def _run_batch(self, batch: list[Job]) -> list[list[Any]]:
        """Every job's results, from one `run` call over all the items of the batch."""
        results = self.run([(j.kind, name, text) for j in batch for name, text in j.pairs])
        out, pos = [], 0
        for j in batch:
            out.append(results[pos:pos + len(j.pairs)])
            pos += len(j.pairs)
        return out
