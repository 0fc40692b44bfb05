"""A deduplicating work queue with per-key exponential backoff (controller-runtime's model).

Watch events, the resync loop and failed attempts all just ``add`` a key. A key is queued
at most once; a key being worked on is never worked on twice at the same time; a failure
re-queues it after a delay that doubles up to a cap, so an unreachable API server is retried
forever but never in a hot loop.

An optional ``gate`` (leadership.py: set while this replica holds the Lease) holds every key
back while it is clear: a standby keeps queueing and deduplicating what its watches see, so
on taking over it already holds every key, and it hands out none before.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import logging
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass, field

logger = logging.getLogger(__name__)


@dataclass
class Backoff:
    base: float = 2.0
    cap: float = 300.0

    def delay(self, failures: int) -> float:
        # 2 ** 1024 does not fit a float (OverflowError); any sane cap is reached before 2 ** 64.
        return float(min(self.base * 2 ** min(failures - 1, 64), self.cap))


@dataclass
class WorkQueue:
    work: Callable[[Hashable], Awaitable[None]]
    workers: int = 16
    backoff: Backoff = field(default_factory=Backoff)
    gate: asyncio.Event | None = None
    # due time -> key, with a sequence number so equal times keep insertion order.
    _heap: list[tuple[float, int, Hashable]] = field(default_factory=list)
    _due: dict[Hashable, float] = field(default_factory=dict)
    _active: set[Hashable] = field(default_factory=set)
    # Keys added while being worked on -> the delay they were added with.
    _again: dict[Hashable, float] = field(default_factory=dict)
    _failures: dict[Hashable, int] = field(default_factory=dict)
    _wakeup: asyncio.Event = field(default_factory=asyncio.Event)
    _seq: itertools.count[int] = field(default_factory=itertools.count)

    def add(self, key: Hashable, delay: float = 0.0) -> None:
        if key in self._active:
            # Being worked on: run it once more afterwards, with whatever changed meanwhile,
            # keeping the delay (a rate limit must hold for work that changes what it watches).
            self._again[key] = min(delay, self._again.get(key, delay))
            return
        due = asyncio.get_running_loop().time() + delay
        if key in self._due and self._due[key] <= due:
            return
        self._due[key] = due
        heapq.heappush(self._heap, (due, next(self._seq), key))
        self._wakeup.set()

    def forget(self, key: Hashable) -> None:
        """The object is gone: drop pending work and its failure history."""
        self._due.pop(key, None)
        self._again.pop(key, None)
        self._failures.pop(key, None)

    def failures(self, key: Hashable) -> int:
        return self._failures.get(key, 0)

    def __len__(self) -> int:
        return len(self._due)

    async def run(self) -> None:
        # A dead worker would shrink the pool silently, and its run() error would fail kopf's
        # cleanup (retried for ever: SIGTERM hangs). So only cancellation ends this.
        workers = {asyncio.create_task(self._worker()) for _ in range(self.workers)}
        try:
            while True:
                done, _ = await asyncio.wait(workers, return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    workers.discard(task)
                    error = None if task.cancelled() else task.exception()
                    logger.error("a work queue worker died; starting another", exc_info=error)
                    # After a pause: a worker that dies at once again must not spin the loop.
                    workers.add(asyncio.create_task(self._worker(pause=1.0)))
        finally:
            for task in workers:
                task.cancel()
            await asyncio.gather(*workers, return_exceptions=True)

    async def _next(self) -> Hashable:
        loop = asyncio.get_running_loop()
        while True:
            if self.gate is not None and not self.gate.is_set():
                # Checked with no await before the return below: a key is never handed out
                # once the gate is clear.
                await self.gate.wait()
                continue
            while self._heap:
                due, _seq, key = self._heap[0]
                if self._due.get(key) != due:
                    heapq.heappop(self._heap)  # superseded or forgotten
                    continue
                if due > loop.time():
                    break
                heapq.heappop(self._heap)
                del self._due[key]
                return key
            self._wakeup.clear()
            timeout = self._heap[0][0] - loop.time() if self._heap else None
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wakeup.wait(), timeout)

    async def _worker(self, pause: float = 0.0) -> None:
        await asyncio.sleep(pause)
        while True:
            key = await self._next()
            self._active.add(key)
            done = False
            delay: float | None = None
            try:
                await self.work(key)
                done = True
            except Exception as exc:  # one object's failure must not stop the others
                failures = self._failures.get(key, 0) + 1
                self._failures[key] = failures
                delay = self.backoff.delay(failures)
                logger.warning("reconcile of %s failed (%s); retrying in %.0fs", key, exc, delay)
            finally:
                # Whatever escaped above (a BaseException, a bug here, cancellation), the key
                # must leave _active, or every later add() would park it in _again for ever.
                self._active.discard(key)
                again = self._again.pop(key, None)
                if done:
                    self._failures.pop(key, None)
                    if again is not None:
                        self.add(key, again)
                else:
                    # The retry supersedes a pending re-run. Without a delay to go by, the cap:
                    # late rather than in a hot loop.
                    self.add(key, self.backoff.cap if delay is None else delay)
