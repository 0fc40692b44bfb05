"""Batcher: fast session calls run on the event loop's thread, slow ones on the inference thread."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from kubeserve.dataplane.onnx_server.batcher import Batcher

FEEDS = {"x": np.zeros((1, 4), dtype=np.float32)}


async def _threads_of_calls(seconds_per_call: float, inline_max_s: float, calls: int) -> list[str]:
    seen: list[str] = []

    def run(feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        seen.append(threading.current_thread().name)
        time.sleep(seconds_per_call)
        return {"y": feeds["x"]}

    with ThreadPoolExecutor(1, thread_name_prefix="infer") as executor:
        batcher = Batcher(
            run, executor, max_batch_size=1, max_delay_s=0.0, mergeable=False,
            inline_max_s=inline_max_s,
        )  # fmt: skip
        batcher.start()
        try:
            for _ in range(calls):
                out = await asyncio.wait_for(batcher.submit(FEEDS), 10)
                np.testing.assert_array_equal(out["y"], FEEDS["x"])
        finally:
            await batcher.close()
    return seen


def test_fast_calls_move_to_the_loop_once_measured() -> None:
    loop_thread = threading.current_thread().name
    seen = asyncio.run(_threads_of_calls(0.0, inline_max_s=0.05, calls=4))
    # The first call is measured on the inference thread; the rest are known to be fast.
    assert seen[0].startswith("infer")
    assert seen[1:] == [loop_thread] * 3


def test_slow_calls_stay_on_the_inference_thread() -> None:
    seen = asyncio.run(_threads_of_calls(0.02, inline_max_s=0.005, calls=3))
    assert all(name.startswith("infer") for name in seen)


def test_zero_turns_it_off() -> None:
    seen = asyncio.run(_threads_of_calls(0.0, inline_max_s=0.0, calls=3))
    assert all(name.startswith("infer") for name in seen)


def test_under_load_calls_leave_the_loop_free_to_read_requests() -> None:
    seen: list[str] = []

    def run(feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        seen.append(threading.current_thread().name)
        return {"y": feeds["x"]}

    async def scenario() -> None:
        with ThreadPoolExecutor(1, thread_name_prefix="infer") as executor:
            batcher = Batcher(
                run, executor, max_batch_size=1, max_delay_s=0.0, mergeable=False,
                inline_max_s=0.05,
            )  # fmt: skip
            batcher.start()
            try:
                await asyncio.wait_for(batcher.submit(FEEDS), 10)  # measured: fast
                seen.clear()
                # Two at once: the first call runs while the second waits in the queue.
                await asyncio.wait_for(
                    asyncio.gather(batcher.submit(FEEDS), batcher.submit(FEEDS)), 10
                )
            finally:
                await batcher.close()

    asyncio.run(scenario())
    assert seen[0].startswith("infer")  # another request was waiting: not inline
    assert seen[1] == threading.current_thread().name  # alone again: inline
