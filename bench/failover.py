"""Benchmark: leader failover on a real control plane, with client-go's default Lease timings.

A fresh etcd + kube-apiserver with an audit log (tests/cluster/ha_env.py; binaries from
$KUBEBUILDER_ASSETS, `make assets` unpacks them), the chart installed by helm, and two
`kubeserve run --leader-elect` replicas under the chart's RBAC, each with its own token
(15 s lease, 10 s renew deadline, 2 s retry period: the defaults the chart runs with).

Each run stops the leader, with SIGKILL (a lost node: the Lease must expire) or SIGTERM
(a rollout or drain: the leader releases it), creates a ModelDeployment at that moment, and
times from the signal to:
- takeover: the standby's Lease write that names it holder (the API server's audit log);
- first write: the new leader's first other write;
- reconciled: its status write for the ModelDeployment created at the signal.
The stopped replica is replaced by a new standby (as a new pod), which runs a few retry
periods before the next run so it has seen the Lease. Every write of every run is then
checked: each was received while the Lease named its sender (no two leaders).

    .venv/bin/python bench/failover.py --runs 10
"""

from __future__ import annotations

import argparse
import datetime
import os
import shlex
import signal
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "cluster"))

from cluster_env import Operator, model_deployment  # noqa: E402
from ha_env import (  # noqa: E402
    HaPlane,
    Write,
    check_one_writer,
    current_holder,
    election_args,
    holders,
)
from kubeapi import eventually  # noqa: E402

RELEASE = NAMESPACE = LEASE = "kubeserve"
LEASE_SECONDS, RETRY = 15, 2.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=10, help="runs per kind of stop")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="kubeserve-failover-") as tmp, HaPlane(Path(tmp)) as ha:
        ha.install(RELEASE, NAMESPACE)
        ha.kube.create(
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "bench"}}, "namespaces"
        )
        counter = iter(range(1000))

        def new_replica() -> Operator:
            name = f"replica-{next(counter)}"
            replica = ha.replica(
                name, account="kubeserve", namespace=NAMESPACE, args=election_args(LEASE)
            )
            replica.start()
            return replica

        running = {r.name: r for r in (new_replica(), new_replica())}
        eventually(lambda: current_holder(ha.kube, NAMESPACE, LEASE), timeout=60, what="leader")
        results: dict[str, list[tuple[float, float, float]]] = {}
        for kind, sig in (("SIGKILL", signal.SIGKILL), ("SIGTERM", signal.SIGTERM)):
            results[kind] = []
            for run in range(args.runs):
                time.sleep(2.2 * RETRY + 1)  # the standby has seen the Lease at least once
                leader = current_holder(ha.kube, NAMESPACE, LEASE)
                name = f"{kind.lower()}-{run}-{uuid.uuid4().hex[:4]}"
                signalled = datetime.datetime.now(datetime.UTC)
                stopped = running[leader].popen
                assert stopped is not None
                os.killpg(stopped.pid, sig)  # not waiting: kopf takes seconds to exit
                ha.kube.create(model_deployment(name, "bench"), "modeldeployments")
                eventually(
                    lambda leader=leader: (
                        current_holder(ha.kube, NAMESPACE, LEASE)  # type: ignore[misc]
                        not in ("", leader)
                    ),
                    timeout=LEASE_SECONDS + 3 * RETRY + 30,
                    what="a new leader",
                )
                successor = current_holder(ha.kube, NAMESPACE, LEASE)
                eventually(
                    lambda name=name, who=successor: _status_written(ha.writes(), name, who),  # type: ignore[misc]
                    timeout=60,
                    what=f"md/{name} reconciled",
                )
                timings = _timings(ha.writes(), signalled, successor, name)
                results[kind].append(timings)
                print(
                    f"{kind} run {run + 1}: takeover {timings[0]:.1f}s, first write "
                    f"{timings[1]:.1f}s, reconciled {timings[2]:.1f}s ({leader} -> {successor})",
                    flush=True,
                )
                stopped.wait(60)
                del running[leader]
                replacement = new_replica()
                running[replacement.name] = replacement
        checked = check_one_writer(ha.writes(), NAMESPACE, LEASE, list(ha.identities.values()))
        changes = len(holders(ha.writes(), NAMESPACE, LEASE))
    print()
    print(f"command: .venv/bin/python bench/failover.py {shlex.join(sys.argv[1:])}".rstrip())
    print(f"lease {LEASE_SECONDS}s, renew deadline 10s, retry period {RETRY:.0f}s (client-go's)")
    print(f"{'stop':8} {'':12} {'p50':>6} {'max':>6}")
    for kind, rows in results.items():
        for column, label in enumerate(("takeover", "first write", "reconciled")):
            values = [row[column] for row in rows]
            p50, worst = statistics.median(values), max(values)
            print(f"{kind:8} {label:12} {p50:5.1f}s {worst:5.1f}s")
    print(
        f"no two leaders: {len(checked)} writes by {len(ha.identities)} replicas, each received "
        f"while the Lease named its sender; {changes} holder changes"
    )
    return 0


def _status_written(writes: list[Write], name: str, who: str) -> bool:
    return any(
        w.who == who and w.name == name and w.subresource == "status" and w.code < 300
        for w in writes
    )


def _timings(
    writes: list[Write], signalled: datetime.datetime, successor: str, name: str
) -> tuple[float, float, float]:
    def since(moment: datetime.datetime) -> float:
        return (moment - signalled).total_seconds()

    mine = [w for w in writes if w.who == successor and w.received >= signalled]
    acquired = min(w.completed for w in mine if w.resource == "leases")
    first = min(w.received for w in mine if w.resource != "leases")
    status = min(w.completed for w in mine if w.name == name and w.subresource == "status")
    return since(acquired), since(first), since(status)


if __name__ == "__main__":
    raise SystemExit(main())
