"""Leader election on a coordination.k8s.io/v1 Lease, with client-go's semantics.

Every replica runs kopf (watches, indexes, /healthz) and queues work, but the work queue
hands out nothing until this replica holds the Lease: a warm standby, as in
controller-runtime. A Lease is what every Kubernetes controller elects with, and needs no
CRD (kopf's peering needs two).

client-go's rules, kept here:
- The Lease is free when absent, when its holder is empty (released), when we hold it, or
  when it has not changed for ``leaseDurationSeconds`` by OUR clock since we saw it change.
  Expiry is never judged from ``renewTime``: that is the holder's clock, and clocks skew.
- Writes are optimistic: a create that meets 409 or an update whose resourceVersion is stale
  lost a race, and the next attempt reads again.
- The leader renews every retry period; a renewal round that has not succeeded within the
  renew deadline means the Lease is lost (renew deadline < lease duration, so the leader
  steps down before anyone else may take over). Unlike client-go's loop, seeing another
  holder ends the round at once: nothing can make that renewal succeed.
- Standbys try every retry period, with client-go's jitter (up to 1.2 periods more).
- A graceful stop releases the Lease: holder "" and a lease duration of 1 s
  (``ReleaseOnCancel``), so a standby takes over at its next try instead of after expiry.

Losing the Lease stops the writers at once and exits the process non-zero (as
controller-runtime does): the kubelet restarts it as a standby with fresh caches.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import logging
import os
import random
import socket
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import metrics
from .kube import ApiError, KubeClient

logger = logging.getLogger(__name__)

LEASE_API = "coordination.k8s.io/v1"
LEASES = "leases"
# client-go's wait.JitterUntil factor for acquiring: waits of 1 to 2.2 retry periods.
JITTER_FACTOR = 1.2
IN_CLUSTER_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")


@dataclass(frozen=True)
class Timing:
    """client-go's defaults (and kube-controller-manager's): 15 s, 10 s, 2 s."""

    lease_duration: int = 15
    renew_deadline: float = 10.0
    retry_period: float = 2.0

    def __post_init__(self) -> None:
        # client-go's NewLeaderElector checks, so a misconfiguration fails at start.
        if self.lease_duration <= self.renew_deadline:
            raise ValueError("the lease duration must be greater than the renew deadline")
        if self.renew_deadline <= JITTER_FACTOR * self.retry_period:
            raise ValueError("the renew deadline must be greater than 1.2 retry periods")
        if self.retry_period <= 0:
            raise ValueError("the retry period must be > 0")


@dataclass(frozen=True)
class Config:
    namespace: str
    name: str
    identity: str
    timing: Timing = field(default_factory=Timing)


def default_identity(environ: dict[str, str] | None = None) -> str:
    """The pod name (downward API); locally the host name and a random suffix, as
    controller-runtime does, so two local processes never share an identity."""
    env = os.environ if environ is None else environ
    return env.get("POD_NAME") or f"{socket.gethostname()}_{uuid.uuid4().hex[:8]}"


def default_namespace(environ: dict[str, str] | None = None) -> str:
    env = os.environ if environ is None else environ
    if env.get("POD_NAMESPACE"):
        return env["POD_NAMESPACE"]
    with contextlib.suppress(OSError):
        return IN_CLUSTER_NAMESPACE.read_text().strip() or "default"
    return "default"


# --- the decisions, pure -----------------------------------------------------------------


@dataclass(frozen=True)
class Record:
    """A Lease's spec, as client-go's LeaderElectionRecord."""

    holder: str = ""
    lease_duration: int = 0
    acquire_time: str | None = None
    renew_time: str | None = None
    transitions: int = 0

    @classmethod
    def of(cls, lease: dict[str, Any]) -> Record:
        spec = lease.get("spec") or {}
        return cls(
            holder=spec.get("holderIdentity") or "",
            lease_duration=int(spec.get("leaseDurationSeconds") or 0),
            acquire_time=spec.get("acquireTime"),
            renew_time=spec.get("renewTime"),
            transitions=int(spec.get("leaseTransitions") or 0),
        )

    def spec(self) -> dict[str, Any]:
        return {
            "holderIdentity": self.holder,
            "leaseDurationSeconds": self.lease_duration,
            "acquireTime": self.acquire_time,
            "renewTime": self.renew_time,
            "leaseTransitions": self.transitions,
        }


def may_take(record: Record, observed_at: float, now: float, identity: str) -> bool:
    """Whether ``identity`` may write the Lease: free, ours, or unchanged for its duration
    since ``observed_at`` (our monotonic clock when we first saw this record)."""
    if not record.holder or record.holder == identity:
        return True
    return observed_at + record.lease_duration <= now


def claim(old: Record | None, identity: str, lease_duration: int, now: str) -> Record:
    """The record that acquires or renews: a new holder counts one more transition."""
    if old is None:
        return Record(identity, lease_duration, now, now, 0)
    if old.holder == identity:
        return Record(identity, lease_duration, old.acquire_time or now, now, old.transitions)
    return Record(identity, lease_duration, now, now, old.transitions + 1)


def released(old: Record, now: str) -> Record:
    """client-go's ReleaseOnCancel record: no holder, expired a second later."""
    return Record("", 1, now, now, old.transitions)


def acquire_wait(retry_period: float, draw: float) -> float:
    """client-go's jittered wait between acquire attempts; ``draw`` in [0, 1)."""
    return retry_period * (1 + JITTER_FACTOR * draw)


def micro_time(moment: datetime.datetime | None = None) -> str:
    """A metav1.MicroTime: RFC 3339 with microseconds, UTC."""
    moment = moment or datetime.datetime.now(datetime.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


# --- the elector -------------------------------------------------------------------------


class Elector:
    """Acquires and renews one Lease; ``leading`` is set exactly while this replica leads."""

    def __init__(
        self,
        config: Config,
        client: Callable[[], KubeClient | None],
        *,
        draw: Callable[[], float] = random.random,
    ) -> None:
        self.config = config
        self.client = client
        self.draw = draw
        self.leading = asyncio.Event()
        # The last record seen and when (monotonic) it was first seen: client-go's
        # observedRecord and observedTime.
        self.observed: Record | None = None
        self.observed_at = 0.0

    def _now(self) -> float:
        return asyncio.get_running_loop().time()

    async def run(self) -> None:
        """Acquire, then renew; returns when the Lease is lost (never while leading)."""
        timing = self.config.timing
        while not await self._attempt():
            await asyncio.sleep(acquire_wait(timing.retry_period, self.draw()))
        self.leading.set()
        metrics.LEADER.set(1)
        logger.info(
            "leading: acquired lease %s/%s as %s",
            self.config.namespace,
            self.config.name,
            self.config.identity,
        )
        try:
            while True:
                await asyncio.sleep(timing.retry_period)
                if not await self._renew_round():
                    return
        finally:
            self.leading.clear()
            metrics.LEADER.set(0)

    async def _renew_round(self) -> bool:
        """Retries every retry period until renewed, or the renew deadline passes."""
        timing = self.config.timing
        deadline = self._now() + timing.renew_deadline
        while True:
            if await self._attempt(timeout=deadline - self._now()):
                return True
            observed = self.observed
            if observed is not None and observed.holder not in ("", self.config.identity):
                logger.error("lost the lease: %s holds it now", observed.holder)
                return False
            if self._now() + timing.retry_period >= deadline:
                logger.error("lost the lease: not renewed within %.0fs", timing.renew_deadline)
                return False
            await asyncio.sleep(timing.retry_period)

    async def _attempt(self, timeout: float | None = None) -> bool:
        """client-go's tryAcquireOrRenew, bounded by ``timeout`` (default: renew deadline)."""
        kube = self.client()
        if kube is None:
            return False  # not logged in yet
        limit = self.config.timing.renew_deadline if timeout is None else timeout
        try:
            # Not wait_for: on Python 3.11 it can swallow a cancellation that arrives as the
            # attempt completes, and the elector would renew on after shutdown.
            async with asyncio.timeout(max(limit, 0.001)):
                return await self._try(kube)
        except (ApiError, TimeoutError) as exc:
            logger.debug("lease %s: %s", self.config.name, exc or "timed out")
            return False

    async def _try(self, kube: KubeClient) -> bool:
        cfg = self.config
        lease = await kube.get(LEASE_API, LEASES, cfg.namespace, cfg.name)
        if lease is None:
            record = claim(None, cfg.identity, cfg.timing.lease_duration, micro_time())
            body = {
                "apiVersion": LEASE_API,
                "kind": "Lease",
                "metadata": {"name": cfg.name, "namespace": cfg.namespace},
                "spec": record.spec(),
            }
            try:
                await kube.create(LEASE_API, LEASES, cfg.namespace, body)
            except ApiError as exc:
                if exc.status == 409:
                    return False  # another replica created it first
                raise
            self._observe(record)
            return True
        current = Record.of(lease)
        if current != self.observed:
            self._observe(current)
        if not may_take(current, self.observed_at, self._now(), cfg.identity):
            return False
        record = claim(current, cfg.identity, cfg.timing.lease_duration, micro_time())
        try:
            await kube.replace(LEASE_API, LEASES, cfg.namespace, {**lease, "spec": record.spec()})
        except ApiError as exc:
            if exc.status == 409:
                return False  # changed since we read it: the next attempt reads again
            raise
        self._observe(record)
        return True

    def _observe(self, record: Record) -> None:
        self.observed = record
        self.observed_at = self._now()

    async def release(self) -> None:
        """Give the Lease up, if we hold it: a standby takes over at its next try.

        Only once the renewals stopped (``run`` cancelled or returned): one would take it back.
        """
        self.leading.clear()
        cfg = self.config
        kube = self.client()
        if kube is None or self.observed is None or self.observed.holder != cfg.identity:
            return
        try:
            async with asyncio.timeout(cfg.timing.renew_deadline):
                # Read again: a renewal cancelled mid-flight may have landed since our last
                # write, and its resourceVersion is the one a PUT must carry.
                lease = await kube.get(LEASE_API, LEASES, cfg.namespace, cfg.name)
                if lease is None or Record.of(lease).holder != cfg.identity:
                    return
                record = released(Record.of(lease), micro_time())
                await kube.replace(
                    LEASE_API, LEASES, cfg.namespace, {**lease, "spec": record.spec()}
                )
        except (ApiError, TimeoutError) as exc:
            logger.warning("could not release the lease (%s); it expires instead", exc)
            return
        logger.info("released lease %s/%s", cfg.namespace, cfg.name)


class Leadership:
    """What handlers.py wires in: the work queue's gate, the elector task, the release.

    Without leader election (``memo.leader_election`` unset: local runs, kmock tests) the
    gate is None and this process always works.
    """

    def __init__(self, memo: Any) -> None:
        self.memo = memo
        config: Config | None = getattr(memo, "leader_election", None)
        self.elector = (
            Elector(config, lambda: getattr(memo, "kube", None)) if config is not None else None
        )
        self.task: asyncio.Task[None] | None = None

    @property
    def gate(self) -> asyncio.Event | None:
        return self.elector.leading if self.elector is not None else None

    def start(self, writers: asyncio.Task[None]) -> None:
        """Elect in the background; on losing the Lease, cancel ``writers`` and stop."""
        if self.elector is not None:
            self.task = asyncio.create_task(self._lead(writers), name="kubeserve-leader-election")

    async def _lead(self, writers: asyncio.Task[None]) -> None:
        assert self.elector is not None
        try:
            await self.elector.run()
        except Exception:
            # A bug here must not leave a replica that never leads, or one that leads on
            # without renewing: treated as a lost Lease, so the restart starts clean.
            logger.exception("leader election failed")
        # Lost. In-flight reconciles may still write: cancel them now, not at kopf's cleanup.
        writers.cancel()
        logger.error("stopping: the lease is lost; the restarted process will be a standby")
        self.memo.exit_code = 1
        stop: asyncio.Event | None = getattr(self.memo, "stop_flag", None)
        if stop is not None:
            stop.set()

    async def release(self) -> None:
        """At shutdown, after the writers stopped: never two writers at once."""
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task
        if self.elector is not None:
            await self.elector.release()
