"""workqueue.py: dedup, one worker per key, re-runs that keep their delay, backoff."""

from __future__ import annotations

import asyncio
from collections.abc import Hashable

import pytest

from kubeserve.workqueue import Backoff, WorkQueue

pytestmark = pytest.mark.looptime


class Recorder:
    def __init__(self, *, fail: int = 0, during: Hashable | None = None) -> None:
        self.started: list[tuple[Hashable, float]] = []
        self.fail = fail
        self.during = during  # a key to add again while it is being worked on
        self.queue: WorkQueue | None = None

    async def __call__(self, key: Hashable) -> None:
        self.started.append((key, asyncio.get_running_loop().time()))
        if self.during == key and self.queue is not None and len(self.started) == 1:
            self.queue.add(key, delay=3.0)
            self.queue.add(key, delay=5.0)  # the shorter delay wins
        await asyncio.sleep(1.0)
        if self.fail:
            self.fail -= 1
            raise RuntimeError("API server unavailable")


async def run_for(queue: WorkQueue, seconds: float) -> None:
    task = asyncio.create_task(queue.run())
    await asyncio.sleep(seconds)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_a_key_added_many_times_runs_once() -> None:
    work = Recorder()
    queue = WorkQueue(work)
    for _ in range(5):
        queue.add("a")
    queue.add("b", delay=2.0)
    await run_for(queue, 10)
    assert [key for key, _ in work.started] == ["a", "b"]
    assert work.started[1][1] == pytest.approx(2.0, abs=0.01)


async def test_added_while_worked_on_runs_again_after_it_with_its_delay() -> None:
    work = Recorder(during="a")
    queue = WorkQueue(work)
    work.queue = queue
    queue.add("a")
    await run_for(queue, 20)
    # The first run ends at 1 s; the re-run waits the 3 s it was added with.
    assert [round(t, 2) for _, t in work.started] == [0.0, 4.0]


async def test_failures_back_off_exponentially_then_succeed() -> None:
    work = Recorder(fail=3)
    queue = WorkQueue(work, backoff=Backoff(base=2.0, cap=300.0))
    queue.add("a")
    await run_for(queue, 60)
    # Each attempt lasts 1 s, then waits 2, 4, 8 s.
    assert [round(t, 2) for _, t in work.started] == [0.0, 3.0, 8.0, 17.0]
    assert queue.failures("a") == 0
