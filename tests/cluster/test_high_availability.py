"""High availability and sharding on a real API server: replicas of `kubeserve run
--leader-elect` under the chart's RBAC, each with a token of its own.

"No two leaders" is judged from the API server's audit log (ha_env.py): every write a
replica sent must have been received while the Lease named that replica. A standby that
reconciles, a leader that writes after releasing, or a standby that takes an unexpired
Lease fails these tests. Lease timings are short (6 s lease, 4 s renew deadline, 1 s retry)
to keep them quick; bench/failover.py measures client-go's defaults.
"""

from __future__ import annotations

import datetime
import os
import signal
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from cluster_env import REQUIRED_ENV, Operator, md, model_deployment
from ha_env import (
    LEASE_API,
    HaPlane,
    LeaseHistory,
    Write,
    check_one_writer,
    current_holder,
    election_args,
    holders,
)
from kubeapi import Kube, eventually

pytestmark = pytest.mark.slow

RELEASE = NAMESPACE = LEASE = "kubeserve"
TIMING = (6, 4.0, 1.0)
LEASE_SECONDS, _, RETRY = TIMING
# A standby's longest wait between tries is 2.2 retry periods (client-go's jitter).
LONGEST_TRY = 2.2 * RETRY
SLACK = 4.0  # process scheduling on a busy 2-core machine, the requests themselves


@pytest.fixture(scope="module")
def ha(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HaPlane]:
    try:
        plane = HaPlane(tmp_path_factory.mktemp("ha"))
    except LookupError as exc:
        if os.environ.get(REQUIRED_ENV) == "1":
            pytest.fail(str(exc))
        pytest.skip(str(exc))
    with plane:
        plane.install(RELEASE, NAMESPACE)
        yield plane


@pytest.fixture
def fresh(ha: HaPlane) -> Iterator[str]:
    """A namespace for this test's ModelDeployments, and no Lease left by the last test."""
    ha.kube.delete(LEASE_API, "leases", NAMESPACE, LEASE)
    name = f"ha-{uuid.uuid4().hex[:6]}"
    ha.kube.create(
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}, "namespaces"
    )
    yield name
    for replica in ha.replicas:
        replica.stop(timeout=30)


def replicas(ha: HaPlane, prefix: str, count: int) -> dict[str, Operator]:
    out = {}
    for index in range(count):
        name = f"{prefix}-{index}"
        out[name] = ha.replica(
            name, account="kubeserve", namespace=NAMESPACE, args=election_args(LEASE, TIMING)
        )
        out[name].start()
    return out


def reconciled(kube: Kube, namespace: str, name: str, timeout: float = 30) -> Any:
    def check() -> Any:
        obj = md(kube, namespace, name)
        status = (obj or {}).get("status") or {}
        return (
            obj
            if obj and status.get("observedGeneration") == obj["metadata"]["generation"]
            else None
        )

    return eventually(check, timeout=timeout, what=f"md/{name} reconciled")


def create(kube: Kube, namespace: str, name: str, **labels: str) -> None:
    obj = model_deployment(name, namespace)
    obj["metadata"]["labels"] = labels
    kube.create(obj, "modeldeployments")


def status_writers(writes: list[Write], namespace: str, name: str) -> set[str]:
    return {
        w.who
        for w in writes
        if (w.resource, w.subresource, w.namespace, w.name)
        == ("modeldeployments", "status", namespace, name)
    }


def new_holder(kube: Kube, old: str) -> str | None:
    holder = current_holder(kube, NAMESPACE, LEASE)
    return holder if holder not in ("", old) else None


def test_one_leader_of_three_reconciles_and_a_killed_one_is_replaced_after_expiry(
    ha: HaPlane, fresh: str
) -> None:
    running = replicas(ha, "kill", 3)
    leader = eventually(
        lambda: current_holder(ha.kube, NAMESPACE, LEASE), timeout=30, what="a leader"
    )
    create(ha.kube, fresh, "before")
    reconciled(ha.kube, fresh, "before")
    time.sleep(2 * RETRY)  # room for a standby to (wrongly) act on the same events

    with LeaseHistory(ha.kube, NAMESPACE, LEASE) as history:
        killed_at = time.time()
        running[leader].stop(signal.SIGKILL)
        create(ha.kube, fresh, "after")
        successor = eventually(
            lambda: new_holder(ha.kube, leader),
            timeout=LEASE_SECONDS + LONGEST_TRY + SLACK,
            what="a new leader after SIGKILL",
        )
        reconciled(ha.kube, fresh, "after")
    took = history.holders()[-1][0] - killed_at
    print(f"SIGKILL: {successor} took over {took:.1f}s after {leader} was killed")

    writes = ha.writes()
    checked = check_one_writer(writes, NAMESPACE, LEASE, list(running))
    assert {w.who for w in checked} == {leader, successor}
    assert status_writers(writes, fresh, "before") == {leader}
    assert status_writers(writes, fresh, "after") == {successor}
    # The new leader went over every ModelDeployment it had seen as a standby, not only new
    # ones: it applied the children of "before" again (no-op server-side applies).
    assert any(
        w.who == successor and w.namespace == fresh and w.name == "before" and w.verb == "patch"
        for w in writes
    )
    # It took an expired Lease: a lease duration after the dead leader's last renewal.
    changes = holders(writes, NAMESPACE, LEASE)
    assert [h for h, _ in changes][-2:] == [leader, successor]
    acquired = changes[-1][1]
    last_renewal = max(
        w.completed
        for w in writes
        if w.resource == "leases" and w.holder == leader and w.completed < acquired.received
    )
    assert acquired.received - last_renewal >= datetime.timedelta(seconds=LEASE_SECONDS - 0.3)
    # The watched history agrees: one more transition, straight from leader to successor.
    seen = history.holders()
    assert [h for _, h, _ in seen][-2:] == [leader, successor], seen
    assert seen[-1][2] == seen[-2][2] + 1
    for name, replica in running.items():
        if name != leader:
            assert replica.stop() == 0


def test_a_stopped_leader_releases_and_a_standby_takes_over_at_once(
    ha: HaPlane, fresh: str
) -> None:
    running = replicas(ha, "term", 2)
    leader = eventually(
        lambda: current_holder(ha.kube, NAMESPACE, LEASE), timeout=30, what="a leader"
    )
    create(ha.kube, fresh, "before")
    reconciled(ha.kube, fresh, "before")

    with LeaseHistory(ha.kube, NAMESPACE, LEASE) as history:
        stopped_at = time.time()
        assert running[leader].stop(signal.SIGTERM) == 0
        create(ha.kube, fresh, "after")
        successor = eventually(
            lambda: new_holder(ha.kube, leader),
            timeout=LONGEST_TRY + SLACK,  # no lease expiry to wait for
            what="a new leader after SIGTERM",
        )
        reconciled(ha.kube, fresh, "after")
    # From the signal to the watch delivering the new holder: released, not expired.
    took = history.holders()[-1][0] - stopped_at
    print(f"SIGTERM: {successor} took over {took:.1f}s after {leader} was stopped")
    assert took < LONGEST_TRY + SLACK < LEASE_SECONDS + RETRY

    writes = ha.writes()
    check_one_writer(writes, NAMESPACE, LEASE, list(running))
    assert status_writers(writes, fresh, "after") == {successor}
    # Released by its holder (holderIdentity "", 1 s), then taken.
    changes = holders(writes, NAMESPACE, LEASE)
    assert [(h, w.who) for h, w in changes][-3:] == [
        (leader, leader),
        ("", leader),
        (successor, successor),
    ]
    assert [h for _, h, _ in history.holders()][-2:] == ["", successor]
    assert running[successor].stop() == 0


def test_a_leader_that_loses_its_lease_stops_and_exits_non_zero(ha: HaPlane, fresh: str) -> None:
    running = replicas(ha, "lost", 1)
    (name,) = running
    eventually(lambda: current_holder(ha.kube, NAMESPACE, LEASE) == name, timeout=30, what="lead")
    create(ha.kube, fresh, "before")
    reconciled(ha.kube, fresh, "before")
    # Taken away (as an expired Lease would be, had its renewals not reached the server).
    lease = ha.kube.get(LEASE_API, "leases", NAMESPACE, LEASE)
    lease["spec"].update(holderIdentity="intruder", leaseDurationSeconds=3600)
    ha.kube.request("PUT", f"/apis/{LEASE_API}/namespaces/{NAMESPACE}/leases/{LEASE}", body=lease)
    popen = running[name].popen
    assert popen is not None
    code = eventually(popen.poll, timeout=RETRY + 30, what="the process to exit")
    assert code == 1
    assert "lost the lease: intruder holds it now" in running[name].log_text()
    create(ha.kube, fresh, "after")
    time.sleep(2)
    assert not (md(ha.kube, fresh, "after") or {}).get("status")


def test_shards_reconcile_only_their_own_model_deployments(ha: HaPlane, fresh: str) -> None:
    # One release per shard, as docs/install.md says; the replicas run the chart's own args.
    shards = {"a": "kubeserve.io/shard=a", "b": "kubeserve.io/shard=b"}
    running = {}
    for shard, selector in shards.items():
        release = f"shard-{shard}"
        ha.install(release, NAMESPACE, f"selector={selector}")
        fullname = f"{release}-kubeserve"
        deployment = ha.kube.get("apps/v1", "deployments", NAMESPACE, fullname)
        args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
        assert f"--selector={selector}" in args and f"--leader-election-id={fullname}" in args
        kept = [a for a in args[1:] if not a.startswith(("--liveness", "--metrics-port"))]
        timing = election_args(fullname, TIMING)[2:]
        running[shard] = ha.replica(
            f"{release}-0", account=fullname, namespace=NAMESPACE, args=[*kept, *timing]
        )
        running[shard].start()
    create(ha.kube, fresh, "nobodys")  # first: a shard would have reached it by the others
    create(ha.kube, fresh, "a1", **{"kubeserve.io/shard": "a"})
    create(ha.kube, fresh, "b1", **{"kubeserve.io/shard": "b"})
    reconciled(ha.kube, fresh, "a1")
    reconciled(ha.kube, fresh, "b1")
    time.sleep(2 * RETRY)
    assert not (md(ha.kube, fresh, "nobodys") or {}).get("status")

    writes = ha.writes()
    for shard in shards:
        lease = f"shard-{shard}-kubeserve"
        assert current_holder(ha.kube, NAMESPACE, lease) == f"shard-{shard}-0"
        check_one_writer(writes, NAMESPACE, lease, [f"shard-{shard}-0"])
    # Every write in the namespace, children included, came from the object's own shard.
    by = {
        who: {w.name for w in writes if w.namespace == fresh and w.who == who}
        for who in ("shard-a-0", "shard-b-0")
    }
    assert by["shard-a-0"] and all(n.startswith("a1") for n in by["shard-a-0"]), by
    assert by["shard-b-0"] and all(n.startswith("b1") for n in by["shard-b-0"]), by
    for replica in running.values():
        assert replica.stop() == 0
