"""How long each model-server pod took to become Ready, by stage, read from the pod's status.

The pod needs no API credentials to report: every figure is in what the kubelet already
writes to the pod's status, and the operator watches pods anyway.

- download: the storage initializer's termination message (dataplane/storage/report.py),
  exact; for an older initializer, its finishedAt - startedAt (1 s resolution);
- startup: the server container's startedAt to the pod's Ready transition. Every runtime
  loads the model and runs its warm-up inference before it reports ready, so this is load
  plus warm-up; the split is not visible in a pod's status (our ONNX Runtime server exports
  both, kubeserve_model_load_seconds and kubeserve_model_warmup_seconds);
- total: the pod's creation to Ready (scheduling, image pulls, download, startup).

A restarted server container (restartCount > 0) is a cold start of its own: it loads the
model again from the pod's volume, so its download is unset and its total is its startup.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from .dataplane.storage.report import CACHE, DOWNLOAD_SECONDS, parse_report
from .resources.storage import INIT_CONTAINER
from .runtimes.base import SERVER_CONTAINER


@dataclass(frozen=True)
class ColdStart:
    pod: str
    uid: str
    restarts: int
    ready_at: str
    startup_seconds: float
    total_seconds: float
    download_seconds: float | None = None
    cache: str | None = None

    @property
    def key(self) -> tuple[str, int]:
        return self.uid, self.restarts

    def status(self) -> dict[str, Any]:
        """status.lastColdStart (api.ColdStart)."""
        status: dict[str, Any] = {"pod": self.pod, "readyAt": self.ready_at}
        if self.download_seconds is not None:
            status["downloadSeconds"] = self.download_seconds
        if self.cache is not None:
            status["cache"] = self.cache
        status["startupSeconds"] = self.startup_seconds
        status["totalSeconds"] = self.total_seconds
        return status

    def stages(self) -> dict[str, float]:
        """Seconds by stage, for the histograms."""
        stages = {"startup": self.startup_seconds, "total": self.total_seconds}
        if self.download_seconds is not None:
            stages["download"] = self.download_seconds
        return stages


def cold_start(pod: Mapping[str, Any]) -> ColdStart | None:
    """The pod's latest start if its server is Ready now; None while it is not (or unreadable)."""
    meta = pod.get("metadata") or {}
    status = pod.get("status") or {}
    ready = next((c for c in status.get("conditions") or [] if c.get("type") == "Ready"), None)
    server = _container(status.get("containerStatuses"), SERVER_CONTAINER)
    if ready is None or ready.get("status") != "True" or server is None:
        return None
    ready_at = _time(ready.get("lastTransitionTime"))
    started_at = _time(((server.get("state") or {}).get("running") or {}).get("startedAt"))
    created = _time(meta.get("creationTimestamp"))
    if ready_at is None or started_at is None or created is None or ready_at < started_at:
        return None  # Ready from before this container started: the kubelet has not caught up
    restarts = int(server.get("restartCount") or 0)
    startup = (ready_at - started_at).total_seconds()
    download, cache = (None, None) if restarts else _download(status)
    return ColdStart(
        pod=str(meta.get("name", "")),
        uid=str(meta.get("uid", "")),
        restarts=restarts,
        ready_at=str(ready.get("lastTransitionTime")),
        startup_seconds=startup,
        total_seconds=startup if restarts else (ready_at - created).total_seconds(),
        download_seconds=download,
        cache=cache,
    )


def _download(status: Mapping[str, Any]) -> tuple[float | None, str | None]:
    init = _container(status.get("initContainerStatuses"), INIT_CONTAINER)
    terminated = ((init or {}).get("state") or {}).get("terminated") or {}
    if terminated.get("exitCode") != 0:
        return None, None  # no initializer (pvc://), or it has not succeeded
    report = parse_report(terminated.get("message"))
    if report is not None:
        return report[DOWNLOAD_SECONDS], report[CACHE]
    began, ended = _time(terminated.get("startedAt")), _time(terminated.get("finishedAt"))
    if began is None or ended is None:
        return None, None
    return (ended - began).total_seconds(), None


def _container(statuses: Any, name: str) -> dict[str, Any] | None:
    return next((c for c in statuses or [] if c.get("name") == name), None)


def _time(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


class ColdStarts:
    """Cold starts seen by the pod watch, waiting for the work queue to record them.

    The watch runs on every replica; only the leader's queue writes the status and observes
    the histograms, so a standby's counts stay at zero and nothing is written twice.
    """

    # Pods remembered as recorded, so a watch's replay does not count them again.
    REMEMBERED = 10_000

    # A new leader sees every Ready pod once: only starts since shortly before this process
    # began go into the histograms (the status takes the latest either way).
    FRESH_MARGIN = timedelta(seconds=30)

    def __init__(self, now: datetime | None = None) -> None:
        self._pending: dict[tuple[str, str], dict[tuple[str, int], ColdStart]] = {}
        self._recorded: OrderedDict[tuple[str, int], None] = OrderedDict()
        self._since = (now or datetime.now(UTC)) - self.FRESH_MARGIN

    def offer(self, key: tuple[str, str], start: ColdStart) -> bool:
        """Keep ``start`` for ``key`` if it is news; True when the queue should run."""
        if start.key in self._recorded:
            return False
        pending = self._pending.setdefault(key, {})
        if start.key in pending:
            return False
        pending[start.key] = start
        return True

    def has_pending(self, key: tuple[str, str]) -> bool:
        return key in self._pending

    def take(self, key: tuple[str, str]) -> list[ColdStart]:
        """Every pod start pending for ``key``, oldest first; each is recorded once."""
        starts = sorted(self._pending.pop(key, {}).values(), key=lambda s: (s.ready_at, s.pod))
        for start in starts:
            self._recorded[start.key] = None
        while len(self._recorded) > self.REMEMBERED:
            self._recorded.popitem(last=False)
        return starts

    def fresh(self, start: ColdStart) -> bool:
        ready_at = _time(start.ready_at)
        return ready_at is not None and ready_at >= self._since

    def forget(self, key: tuple[str, str]) -> None:
        self._pending.pop(key, None)


def newer(start: ColdStart, status: Mapping[str, Any] | None) -> bool:
    """Is ``start`` later than the status' lastColdStart?"""
    last = (status or {}).get("lastColdStart") or {}
    return (start.ready_at, start.pod) > (str(last.get("readyAt", "")), str(last.get("pod", "")))
