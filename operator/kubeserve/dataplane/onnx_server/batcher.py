"""Dynamic batching: merge concurrent requests along axis 0 and run them as one session call.

One worker task owns the queue and runs one session call at a time in a dedicated thread, so the
event loop stays free and ONNX Runtime's intra-op threads get the cores to themselves. Requests
that arrive while a call runs wait in the queue and are merged into the next call: under load that
batches even with --max-batch-delay-ms 0. A positive delay also holds a partial batch open, for at
most that long after its first request arrived, to let more requests join; it is spent only when
requests are arriving together (the batch already merged several, or the previous one did), so a
lone request at low load does not wait for company that is not coming.

`max_batch_size` counts rows along axis 0 (samples, as in Triton), not requests. A request with
more rows than that runs on its own, and a request is merged only with requests whose other
dimensions match (for instance the same sequence length).

Requests reach the batcher already validated against the model's signature, so a malformed one
cannot fail a merged call. If ONNX Runtime still raises on a merged call (say a data-dependent
error), each request of that call is rerun alone, so only the one that fails gets the error.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Hashable, Mapping, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field

import numpy as np

from .errors import InferenceFailed, NotReady

log = logging.getLogger(__name__)

RunFn = Callable[[Mapping[str, np.ndarray]], dict[str, np.ndarray]]
# Called once per session call: rows in the call, and each request's seconds in the queue.
BatchObserver = Callable[[int, Sequence[float]], None]


@dataclass(eq=False)
class _Pending:
    feeds: Mapping[str, np.ndarray]
    rows: int
    key: Hashable | None  # None: must run alone
    enqueued: float
    future: asyncio.Future[dict[str, np.ndarray]] = field(repr=False)


class Batcher:
    def __init__(
        self,
        run: RunFn,
        executor: Executor,
        *,
        max_batch_size: int,
        max_delay_s: float,
        mergeable: bool,
        observe: BatchObserver | None = None,
        inline_max_s: float = 0.0,
    ) -> None:
        self._run_fn = run
        self._executor = executor
        # A lone request whose session call takes less than this runs on the event loop's
        # thread: handing a call to the inference thread and its result back costs two thread
        # wake-ups, more than a small model's whole call. ORT releases the GIL either way;
        # only the loop waits. 0: always the inference thread.
        self._inline_max_s = inline_max_s
        self._call_s: float | None = None  # recent session call time (moving average)
        self._max_rows = max_batch_size
        self._max_delay_s = max_delay_s
        # Merging needs a dynamic first dimension on every input and output.
        self._mergeable = mergeable and max_batch_size > 1
        self._observe = observe
        self._queue: list[_Pending] = []
        self._arrived = asyncio.Event()
        self._running: list[_Pending] = []
        self._last_merged = 0  # requests in the previous session call
        self._worker: asyncio.Task[None] | None = None

    @property
    def merges(self) -> bool:
        return self._mergeable

    def start(self) -> None:
        if self._worker is None:
            self._worker = asyncio.get_running_loop().create_task(self._work(), name="onnx-batcher")

    async def close(self) -> None:
        """Stop the worker; anything still queued or running fails with 503."""
        if self._worker is not None:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker
            self._worker = None
        for pending in (*self._running, *self._queue):
            if not pending.future.done():
                pending.future.set_exception(NotReady("the server is shutting down"))
        self._queue.clear()
        self._running = []

    async def submit(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Queue one validated request and wait for its outputs (all of the model's outputs)."""
        if self._worker is None:
            raise NotReady("the model is not serving")
        loop = asyncio.get_running_loop()
        rows, key = self._rows_and_key(feeds)
        pending = _Pending(feeds, rows, key, loop.time(), loop.create_future())
        self._queue.append(pending)
        self._arrived.set()
        return await pending.future

    def _rows_and_key(self, feeds: Mapping[str, np.ndarray]) -> tuple[int, Hashable | None]:
        if not self._mergeable:
            return 1, None
        arrays = list(feeds.values())
        rows = arrays[0].shape[0]
        if any(array.shape[0] != rows for array in arrays) or rows > self._max_rows:
            return rows, None  # inconsistent batch axis or too big: run it as it is, alone
        return rows, tuple((name, array.shape[1:]) for name, array in feeds.items())

    async def _work(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            while not self._queue:
                self._arrived.clear()
                await self._arrived.wait()
            batch = [self._queue.pop(0)]
            if batch[0].future.done():  # its client went away
                continue
            if batch[0].key is not None:
                rows = self._fill(batch, batch[0].rows)
                # Spend the delay only when requests are arriving together (this batch already
                # merged some, or the last one did): a lone request at low load runs at once
                # instead of waiting for company that is not coming.
                deadline = batch[0].enqueued + self._max_delay_s
                expect_more = len(batch) > 1 or self._last_merged > 1
                while expect_more and rows < self._max_rows and loop.time() < deadline:
                    self._arrived.clear()
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._arrived.wait(), deadline - loop.time())
                    rows = self._fill(batch, rows)
            self._last_merged = len(batch)
            try:
                await self._run(batch)
            except asyncio.CancelledError:
                raise
            except Exception:  # never let one batch kill the worker
                log.exception("unexpected error while running a batch")
                for pending in batch:
                    if not pending.future.done():
                        pending.future.set_exception(InferenceFailed("internal batching error"))

    def _fill(self, batch: list[_Pending], rows: int) -> int:
        """Move queued requests compatible with batch[0] into the batch while rows fit."""
        key = batch[0].key
        kept: list[_Pending] = []
        for pending in self._queue:
            if pending.future.done():
                continue
            if pending.key == key and rows + pending.rows <= self._max_rows:
                batch.append(pending)
                rows += pending.rows
            else:
                kept.append(pending)
        self._queue = kept
        return rows

    async def _run(self, batch: list[_Pending]) -> None:
        loop = asyncio.get_running_loop()
        now = loop.time()
        if self._observe is not None:
            self._observe(sum(p.rows for p in batch), [now - p.enqueued for p in batch])
        self._running = batch
        try:
            if len(batch) == 1:
                await self._run_alone(batch[0])
                return
            feeds = {
                name: np.concatenate([p.feeds[name] for p in batch]) for name in batch[0].feeds
            }
            try:
                outputs = await self._call(feeds)
            except Exception as exc:
                log.warning(
                    "merged call of %d requests failed (%s); rerunning them one by one",
                    len(batch),
                    exc,
                )
                for pending in batch:
                    await self._run_alone(pending)
                return
            total = sum(p.rows for p in batch)
            if any(out.ndim == 0 or out.shape[0] != total for out in outputs.values()):
                # The graph does not keep rows aligned along axis 0 after all; do not guess.
                log.warning("outputs are not split along axis 0; rerunning requests one by one")
                for pending in batch:
                    await self._run_alone(pending)
                return
            start = 0
            for pending in batch:
                stop = start + pending.rows
                if not pending.future.done():
                    pending.future.set_result(
                        {name: out[start:stop] for name, out in outputs.items()}
                    )
                start = stop
        finally:
            self._running = []

    async def _call(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        # Only a lone request runs inline: under load the loop must keep reading requests
        # while the session computes, or the next batch has nothing to merge.
        fast = self._call_s is not None and self._call_s < self._inline_max_s
        if fast and not self._queue and len(self._running) <= 1:
            outputs, seconds = self._timed(feeds)
        else:
            loop = asyncio.get_running_loop()
            outputs, seconds = await loop.run_in_executor(self._executor, self._timed, feeds)
        self._call_s = seconds if self._call_s is None else 0.8 * self._call_s + 0.2 * seconds
        return outputs

    def _timed(self, feeds: Mapping[str, np.ndarray]) -> tuple[dict[str, np.ndarray], float]:
        started = time.perf_counter()
        outputs = self._run_fn(feeds)
        return outputs, time.perf_counter() - started

    async def _run_alone(self, pending: _Pending) -> None:
        try:
            outputs = await self._call(pending.feeds)
        except Exception as exc:
            if not pending.future.done():
                pending.future.set_exception(InferenceFailed(f"onnxruntime failed: {exc}"))
            return
        if not pending.future.done():
            pending.future.set_result(outputs)
