"""coldstarts: a model-server pod's cold start from its status alone, as a table."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from kubeserve.coldstarts import ColdStart, ColdStarts, cold_start, newer

CREATED = "2026-12-06T10:00:00Z"
REPORT = '{"downloadSeconds":3.25,"bytes":524288,"cache":"hit"}'


def pod(
    *,
    ready: str | None = "True",
    ready_at: str = "2026-12-06T10:00:10Z",
    server_started: str = "2026-12-06T10:00:06Z",
    restarts: int = 0,
    init: dict[str, Any] | None = None,
) -> dict[str, Any]:
    status: dict[str, Any] = {
        "containerStatuses": [
            {"name": "server", "restartCount": restarts,
             "state": {"running": {"startedAt": server_started}}},
        ],
    }  # fmt: skip
    if ready is not None:
        status["conditions"] = [{"type": "Ready", "status": ready, "lastTransitionTime": ready_at}]
    if init is not None:
        status["initContainerStatuses"] = [{"name": "storage-initializer", "state": init}]
    return {
        "metadata": {"name": "m-5d8f-x2k4q", "uid": "u1", "creationTimestamp": CREATED},
        "status": status,
    }


def terminated(exit_code: int = 0, message: str | None = REPORT) -> dict[str, Any]:
    state: dict[str, Any] = {
        "exitCode": exit_code,
        "startedAt": "2026-12-06T10:00:01Z",
        "finishedAt": "2026-12-06T10:00:05Z",
    }
    if message is not None:
        state["message"] = message
    return {"terminated": state}


@pytest.mark.parametrize(
    ("body", "want"),
    [
        # The initializer's own report wins over its container's lifetime.
        (pod(init=terminated()), (3.25, "hit", 4.0, 10.0)),
        # An older initializer, or a garbled message: its container's lifetime (1 s steps).
        (pod(init=terminated(message=None)), (4.0, None, 4.0, 10.0)),
        (pod(init=terminated(message="Error: boom")), (4.0, None, 4.0, 10.0)),
        # pvc:// models have no initializer.
        (pod(), (None, None, 4.0, 10.0)),
        # A restarted server loads again from the pod's volume: no download, total = startup.
        (
            pod(
                init=terminated(),
                restarts=2,
                server_started="2026-12-06T11:00:00Z",
                ready_at="2026-12-06T11:00:07Z",
            ),
            (None, None, 7.0, 7.0),
        ),
    ],
)
def test_stages(body: dict[str, Any], want: tuple[Any, ...]) -> None:
    start = cold_start(body)
    assert start is not None
    got = (start.download_seconds, start.cache, start.startup_seconds, start.total_seconds)
    assert got == want


@pytest.mark.parametrize(
    "body",
    [
        pod(ready="False"),
        pod(ready=None),
        # Ready from before this container started: the kubelet has not caught up yet.
        pod(ready_at="2026-12-06T10:00:05Z"),
        pod(server_started="not a time"),
    ],
)
def test_no_cold_start_until_the_server_is_ready(body: dict[str, Any]) -> None:
    assert cold_start(body) is None


def test_status_leaves_out_unknown_stages() -> None:
    start = cold_start(pod())
    assert start is not None
    assert start.status() == {
        "pod": "m-5d8f-x2k4q",
        "readyAt": "2026-12-06T10:00:10Z",
        "startupSeconds": 4.0,
        "totalSeconds": 10.0,
    }
    assert start.stages() == {"startup": 4.0, "total": 10.0}


def _start(ready_at: str, uid: str = "u1", restarts: int = 0) -> ColdStart:
    return ColdStart("p", uid, restarts, ready_at, 1.0, 2.0)


def test_each_pod_start_is_recorded_once() -> None:
    starts = ColdStarts()
    key = ("ml", "m")
    assert starts.offer(key, _start("2026-12-06T10:00:10Z"))
    assert not starts.offer(key, _start("2026-12-06T10:00:10Z"))  # another event of it
    assert starts.has_pending(key)
    assert len(starts.take(key)) == 1
    assert not starts.has_pending(key)
    # The watch replays the same pod (a relist): nothing new.
    assert not starts.offer(key, _start("2026-12-06T10:00:10Z"))
    # The same pod's server restarted: a new cold start.
    assert starts.offer(key, _start("2026-12-06T10:05:00Z", restarts=1))


def test_every_pending_start_is_taken_oldest_first() -> None:
    starts = ColdStarts()
    key = ("ml", "m")
    assert starts.offer(key, _start("2026-12-06T10:00:20Z", uid="b"))
    assert starts.offer(key, _start("2026-12-06T10:00:10Z", uid="a"))
    assert [s.uid for s in starts.take(key)] == ["a", "b"]
    assert starts.take(key) == []


def test_only_starts_since_the_process_began_are_fresh() -> None:
    starts = ColdStarts(now=datetime(2026, 12, 6, 10, 0, 0, tzinfo=UTC))
    assert starts.fresh(_start("2026-12-06T09:59:45Z"))  # within the margin
    assert not starts.fresh(_start("2026-12-06T09:50:00Z"))  # a new leader's relist


def test_newer_than_the_status() -> None:
    status = {"lastColdStart": {"pod": "p", "readyAt": "2026-12-06T10:00:10Z"}}
    assert newer(_start("2026-12-06T10:00:11Z"), status)
    assert not newer(_start("2026-12-06T10:00:10Z"), status)
    assert not newer(_start("2026-12-06T10:00:09Z"), status)
    assert newer(_start("2026-12-06T10:00:09Z"), {})
