"""A deduplicating work queue with per-key exponential backoff (controller-runtime's model).

Watch events, the resync loop and failed attempts all just ``add`` a key. A key is queued
at most once; a key being worked on is never worked on twice at the same time; a failure
re-queues it after a delay that doubles up to a cap, so an unreachable API server is retried
forever but never in a hot loop.
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
        return float(min(self.base * 2 ** (failures - 1), self.cap))


@dataclass
class WorkQueue:
    work: Callable[[Hashable], Awaitable[None]]
    workers: int = 16
    backoff: Backoff = field(default_factory=Backoff)
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
        await asyncio.gather(*(self._worker() for _ in range(self.workers)))

    async def _next(self) -> Hashable:
        loop = asyncio.get_running_loop()
        while True:
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

    async def _worker(self) -> None:
        while True:
            key = await self._next()
            self._active.add(key)
            try:
                await self.work(key)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # one object's failure must not stop the others
                failures = self._failures.get(key, 0) + 1
                self._failures[key] = failures
                delay = self.backoff.delay(failures)
                logger.warning("reconcile of %s failed (%s); retrying in %.0fs", key, exc, delay)
                self._active.discard(key)
                self._again.pop(key, None)
                self.add(key, delay)
                continue
            self._failures.pop(key, None)
            self._active.discard(key)
            if key in self._again:
                self.add(key, self._again.pop(key))
