"""leadership.py: client-go's election decisions, and the elector against an in-memory Lease
store that keeps the API server's optimistic concurrency (resourceVersion, 409 on create)."""

from __future__ import annotations

import asyncio
import copy
from typing import Any

import pytest

from kubeserve import leadership
from kubeserve.kube import ApiError
from kubeserve.leadership import Config, Elector, Record, Timing

pytestmark = pytest.mark.looptime

HELD = Record("pod-a", 15, "t0", "t0", 3)


def test_the_defaults_are_client_gos_and_bad_timings_are_refused() -> None:
    assert Timing() == Timing(15, 10.0, 2.0)
    with pytest.raises(ValueError, match="greater than the renew deadline"):
        Timing(10, 10.0, 2.0)
    with pytest.raises(ValueError, match=r"1\.2 retry periods"):
        Timing(15, 2.4, 2.0)


@pytest.mark.parametrize(
    ("record", "observed_at", "now", "expected"),
    [
        (Record(), 0.0, 0.0, True),  # released: holder ""
        (HELD, 100.0, 100.0, False),  # another holder, just seen
        (HELD, 100.0, 114.9, False),  # not yet a lease duration since it last changed
        (HELD, 100.0, 115.0, True),  # unchanged for a lease duration by our clock: expired
        (Record("me", 15), 100.0, 100.0, True),  # ours
    ],
)
def test_may_take(record: Record, observed_at: float, now: float, expected: bool) -> None:
    assert leadership.may_take(record, observed_at, now, "me") is expected


def test_expiry_goes_by_our_clock_never_by_the_holders_renew_time() -> None:
    # A renewTime an hour old (a holder whose clock lags) means nothing: we saw it change now.
    stale_clock = Record("pod-a", 15, "2000-01-01T00:00:00.000000Z", "2000-01-01T00:00:00.000000Z")
    assert not leadership.may_take(stale_clock, observed_at=50.0, now=51.0, identity="me")


def test_claim_counts_a_transition_only_when_the_holder_changes() -> None:
    assert leadership.claim(None, "me", 15, "t1") == Record("me", 15, "t1", "t1", 0)
    assert leadership.claim(HELD, "me", 15, "t1") == Record("me", 15, "t1", "t1", 4)
    renewed = leadership.claim(Record("me", 15, "t0", "t0", 4), "me", 15, "t1")
    assert renewed == Record("me", 15, "t0", "t1", 4)
    # After a release (holder ""), the next holder is a transition too.
    assert leadership.claim(Record("", 1, "t0", "t0", 4), "me", 15, "t1").transitions == 5


def test_release_is_client_gos_release_on_cancel() -> None:
    assert leadership.released(Record("me", 15, "t0", "t1", 4), "t2") == Record(
        "", 1, "t2", "t2", 4
    )


def test_acquire_waits_are_jittered_like_client_go() -> None:
    assert leadership.acquire_wait(2.0, 0.0) == 2.0
    assert leadership.acquire_wait(2.0, 0.999) == pytest.approx(4.4, abs=0.01)


def test_micro_time_is_a_metav1_micro_time() -> None:
    import datetime

    moment = datetime.datetime(2025, 1, 2, 3, 4, 5, 6, tzinfo=datetime.UTC)
    assert leadership.micro_time(moment) == "2025-01-02T03:04:05.000006Z"


def test_identity_and_namespace_come_from_the_downward_api() -> None:
    env = {"POD_NAME": "kubeserve-7d-abc", "POD_NAMESPACE": "ops"}
    assert leadership.default_identity(env) == "kubeserve-7d-abc"
    assert leadership.default_namespace(env) == "ops"
    # Locally: unique per process, so two local replicas never share an identity.
    assert leadership.default_identity({}) != leadership.default_identity({})


# --- the elector ---------------------------------------------------------------------------


class LeaseStore:
    """One namespace's Leases with the API server's concurrency rules; ``down`` fails all."""

    def __init__(self) -> None:
        self.leases: dict[str, dict[str, Any]] = {}
        self.version = 0
        self.down = False
        self.writes: list[tuple[float, str]] = []  # (time, holderIdentity written)

    def _check(self) -> None:
        if self.down:
            raise ApiError(0, "ClientConnectorError: connection refused")

    def _store(self, obj: dict[str, Any]) -> dict[str, Any]:
        self.version += 1
        stored = copy.deepcopy(obj)
        stored["metadata"]["resourceVersion"] = str(self.version)
        self.leases[obj["metadata"]["name"]] = stored
        now = asyncio.get_running_loop().time()
        self.writes.append((now, stored["spec"]["holderIdentity"]))
        return copy.deepcopy(stored)

    async def get(self, api_version: str, plural: str, namespace: str, name: str) -> Any:
        self._check()
        return copy.deepcopy(self.leases.get(name))

    async def create(self, api_version: str, plural: str, namespace: str, obj: Any) -> Any:
        self._check()
        if obj["metadata"]["name"] in self.leases:
            raise ApiError(409, "already exists")
        return self._store(obj)

    async def replace(self, api_version: str, plural: str, namespace: str, obj: Any) -> Any:
        self._check()
        current = self.leases[obj["metadata"]["name"]]
        if obj["metadata"].get("resourceVersion") != current["metadata"]["resourceVersion"]:
            raise ApiError(409, "the object has been modified")
        return self._store(obj)


def elector(store: LeaseStore, identity: str, timing: Timing | None = None) -> Elector:
    config = Config("kubeserve", "kubeserve", identity, timing or Timing())
    return Elector(config, lambda: store, draw=lambda: 0.5)  # type: ignore[arg-type,return-value]


async def test_one_leader_a_standby_waits_and_takes_over_after_expiry_by_its_own_clock() -> None:
    store = LeaseStore()
    a, b = elector(store, "a"), elector(store, "b")
    run_a = asyncio.create_task(a.run())
    await asyncio.sleep(0.1)
    run_b = asyncio.create_task(b.run())
    await asyncio.sleep(60)
    assert a.leading.is_set() and not b.leading.is_set()
    assert {holder for _, holder in store.writes} == {"a"}
    # a vanishes (SIGKILL): its last renewal stands, unchanged.
    run_a.cancel()
    killed_at = asyncio.get_running_loop().time()
    last_renewal = store.writes[-1][0]
    await asyncio.sleep(30)
    assert b.leading.is_set()
    taken_at = next(t for t, holder in store.writes if holder == "b")
    # Expired 15 s after b last saw it change, found at b's next jittered try (2 s * 1.6).
    assert last_renewal + 15 <= taken_at <= killed_at + 15 + 3.2 + 0.1
    assert store.leases["kubeserve"]["spec"]["leaseTransitions"] == 1
    run_b.cancel()


async def test_release_hands_over_at_the_standbys_next_try() -> None:
    store = LeaseStore()
    a, b = elector(store, "a"), elector(store, "b")
    run_a = asyncio.create_task(a.run())
    await asyncio.sleep(0.1)
    run_b = asyncio.create_task(b.run())
    await asyncio.sleep(20)
    run_a.cancel()
    await asyncio.gather(run_a, return_exceptions=True)
    released_at = asyncio.get_running_loop().time()
    await a.release()
    assert store.leases["kubeserve"]["spec"]["holderIdentity"] == ""
    assert store.leases["kubeserve"]["spec"]["leaseDurationSeconds"] == 1
    await asyncio.sleep(10)
    taken_at = next(t for t, holder in store.writes if holder == "b")
    assert taken_at - released_at <= 3.2 + 0.1  # one jittered retry period, not 15 s
    run_b.cancel()


async def test_a_leader_that_cannot_renew_steps_down_before_anyone_may_take_over() -> None:
    store = LeaseStore()
    a = elector(store, "a")
    run_a = asyncio.create_task(a.run())
    await asyncio.sleep(10)
    assert a.leading.is_set()
    last_renewal = store.writes[-1][0]
    store.down = True  # a partition: a keeps running but reaches nothing
    await asyncio.wait_for(run_a, timeout=30)  # run() returns: lost
    stepped_down = asyncio.get_running_loop().time()
    assert not a.leading.is_set()
    # Within a retry period plus the renew deadline, before the lease duration elapses.
    assert stepped_down - last_renewal <= 2 + 10 < 15


async def test_a_leader_that_sees_another_holder_steps_down_at_once() -> None:
    store = LeaseStore()
    a = elector(store, "a")
    run_a = asyncio.create_task(a.run())
    await asyncio.sleep(5)
    lease = store.leases["kubeserve"]
    store._store({**lease, "spec": {**lease["spec"], "holderIdentity": "intruder"}})
    stolen_at = asyncio.get_running_loop().time()
    await asyncio.wait_for(run_a, timeout=30)
    assert asyncio.get_running_loop().time() - stolen_at <= 2.1  # its next renewal, not 10 s


async def test_two_candidates_at_once_one_wins_the_create_race() -> None:
    store = LeaseStore()
    electors = [elector(store, name) for name in "abc"]
    tasks = [asyncio.create_task(e.run()) for e in electors]
    await asyncio.sleep(30)
    assert sum(e.leading.is_set() for e in electors) == 1
    assert len({holder for _, holder in store.writes}) == 1
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def test_release_does_nothing_for_a_standby_or_a_lease_taken_since() -> None:
    store = LeaseStore()
    a, b = elector(store, "a"), elector(store, "b")
    run_a = asyncio.create_task(a.run())
    await asyncio.sleep(0.1)
    run_b = asyncio.create_task(b.run())
    await asyncio.sleep(5)
    run_b.cancel()
    await asyncio.gather(run_b, return_exceptions=True)
    writes = len(store.writes)
    await b.release()  # a standby holds nothing
    assert len(store.writes) == writes
    run_a.cancel()
    await asyncio.gather(run_a, return_exceptions=True)


async def test_losing_the_lease_cancels_the_writers_and_stops_with_exit_code_1() -> None:
    import types

    store = LeaseStore()
    memo = types.SimpleNamespace(
        leader_election=Config("kubeserve", "kubeserve", "a", Timing()),
        kube=store,
        stop_flag=asyncio.Event(),
        exit_code=0,
    )
    leadership_ = leadership.Leadership(memo)
    assert leadership_.gate is not None
    writers = asyncio.create_task(asyncio.Event().wait())
    leadership_.start(writers=writers)
    await asyncio.sleep(5)
    assert leadership_.gate.is_set() and not writers.done()
    lease = store.leases["kubeserve"]
    store._store({**lease, "spec": {**lease["spec"], "holderIdentity": "intruder"}})
    await asyncio.wait_for(memo.stop_flag.wait(), timeout=5)
    assert writers.cancelled() and memo.exit_code == 1 and not leadership_.gate.is_set()
    await leadership_.release()  # not ours any more: nothing written
    assert store.leases["kubeserve"]["spec"]["holderIdentity"] == "intruder"


async def test_without_leader_election_there_is_no_gate() -> None:
    import types

    leadership_ = leadership.Leadership(types.SimpleNamespace())
    assert leadership_.gate is None
    leadership_.start(writers=asyncio.create_task(asyncio.sleep(0)))
    await leadership_.release()
