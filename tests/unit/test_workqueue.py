"""workqueue.py: dedup, one worker per key, re-runs that keep their delay, backoff."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Hashable

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


# --- Issue 17, defect 6: a worker must survive anything one key's attempt does ---------------


class Fatal(BaseException):
    """Not an Exception, so ``except Exception`` lets it through (as a real bug would)."""


class Work:
    """Fails each key in ``fail`` that many times with ``error``, then succeeds after 1 s."""

    def __init__(
        self, fail: dict[Hashable, int] | None = None, error: type[BaseException] = RuntimeError
    ) -> None:
        self.fail = dict(fail or {})
        self.error = error
        self.runs: Counter[Hashable] = Counter()
        self.running = 0
        self.peak = 0
        self.succeeded: defaultdict[Hashable, asyncio.Event] = defaultdict(asyncio.Event)

    async def __call__(self, key: Hashable) -> None:
        self.runs[key] += 1
        if self.fail.get(key, 0) > 0:
            self.fail[key] -= 1
            raise self.error("API server unavailable")
        self.running += 1
        self.peak = max(self.peak, self.running)
        try:
            await asyncio.sleep(1.0)
        finally:
            self.running -= 1
        self.succeeded[key].set()


@contextlib.asynccontextmanager
async def running(queue: WorkQueue) -> AsyncIterator[None]:
    task = asyncio.create_task(queue.run())
    await asyncio.sleep(0)
    yield
    assert not task.done(), f"run() ended on its own: {task.exception()!r}"
    loop = asyncio.get_running_loop()
    cancelled_at = loop.time()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    # Cancellation stops every worker, at once.
    assert loop.time() == pytest.approx(cancelled_at)
    assert asyncio.all_tasks() == {asyncio.current_task()}


async def until(event: asyncio.Event, seconds: float) -> bool:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(event.wait(), seconds)
    return event.is_set()


async def live_workers(queue: WorkQueue, work: Work) -> int:
    """How many keys the queue works on at once, given more keys than workers."""
    work.peak = 0
    probes = [("probe", len(work.runs), i) for i in range(queue.workers + 2)]
    for key in probes:
        queue.add(key)
    for key in probes:
        assert await until(work.succeeded[key], 60), f"{key} never ran"
    return work.peak


def test_backoff_never_overflows() -> None:
    backoff = Backoff(base=2.0, cap=300.0)
    assert [backoff.delay(n) for n in (1, 2, 3)] == [2.0, 4.0, 8.0]
    for failures in (1024, 1025, 1026, 10**6, 10**30):
        assert backoff.delay(failures) == 300.0


async def test_a_key_failing_over_1025_times_is_still_retried_and_no_worker_is_lost() -> None:
    work = Work(fail={"a": 1100})
    queue = WorkQueue(work, workers=4, backoff=Backoff(base=0.125, cap=0.5))
    async with running(queue):
        queue.add("a")
        assert await until(work.succeeded["a"], 3600), (
            f"a stopped after {work.runs['a']} runs; active: {queue._active}"
        )
        assert work.runs["a"] == 1101
        assert queue.failures("a") == 0
        assert await live_workers(queue, work) == 4
    assert not queue._active


class BrokenBackoff(Backoff):
    def delay(self, failures: int) -> float:
        raise ValueError("broken backoff")


async def test_a_failing_backoff_neither_strands_the_key_nor_loses_a_worker(
    caplog: pytest.LogCaptureFixture,
) -> None:
    work = Work(fail={"a": 2})
    queue = WorkQueue(work, workers=3, backoff=BrokenBackoff(cap=5.0))
    async with running(queue):
        queue.add("a")
        # Without a delay to go by, the key is retried after the cap.
        assert await until(work.succeeded["a"], 60), (
            f"a stopped after {work.runs['a']} runs; active: {queue._active}"
        )
        assert work.runs["a"] == 3
        assert "a" not in queue._active
        assert await live_workers(queue, work) == 3
    assert "broken backoff" in caplog.text


async def test_a_worker_killed_by_its_work_is_logged_and_replaced_and_the_key_retried(
    caplog: pytest.LogCaptureFixture,
) -> None:
    work = Work(fail={"a": 1}, error=Fatal)
    queue = WorkQueue(work, workers=3, backoff=Backoff(cap=5.0))
    async with running(queue):
        queue.add("a")
        await asyncio.sleep(0.5)
        assert "a" not in queue._active
        assert await until(work.succeeded["a"], 60), f"a never ran again; active: {queue._active}"
        assert work.runs["a"] == 2
        assert await live_workers(queue, work) == 3
    died = [r for r in caplog.records if r.levelno == logging.ERROR and r.exc_info]
    assert len(died) == 1
    assert died[0].exc_info is not None and died[0].exc_info[0] is Fatal


# --- the leadership gate: a standby queues, deduplicates, and works on nothing ---------------


async def test_a_closed_gate_holds_every_key_until_it_opens_then_each_runs_once() -> None:
    work = Recorder()
    gate = asyncio.Event()
    queue = WorkQueue(work, gate=gate)
    task = asyncio.create_task(queue.run())
    for key in ("a", "b", "a"):
        queue.add(key)
    queue.add("c", delay=3.0)
    await asyncio.sleep(10)
    assert work.started == [] and len(queue) == 3
    gate.set()
    await asyncio.sleep(5)
    assert sorted(key for key, _ in work.started) == ["a", "b", "c"]
    assert {round(t, 2) for _, t in work.started} == {10.0}
    # Closed again: a key due later is held, however long.
    gate.clear()
    queue.add("d", delay=1.0)
    await asyncio.sleep(100)
    assert "d" not in [key for key, _ in work.started]
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
