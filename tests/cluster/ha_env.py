"""Leader election on a real control plane: its own API server with an audit log, the chart
installed by helm, operator replicas each with a token of its own, and the checks.

Who wrote what, and when, comes from the API server's audit log, not from the operator's
own logs: every replica logs in with its own token of the chart's ServiceAccount, and the
audit event of each request carries the token's id (``authentication.kubernetes.io/
credential-id``, "JTI=..."). The Lease's holder after each write comes from the request
bodies of the Lease writes in the same log. Shared by test_high_availability.py and
bench/failover.py.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime
import json
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cluster_env import CHART, Operator, Tools, tool
from envtest import ControlPlane, find_assets
from kubeapi import ApiFailure, Kube

LEASE_API = "coordination.k8s.io/v1"
CREDENTIAL_ID = "authentication.kubernetes.io/credential-id"
WRITE_VERBS = {"create", "update", "patch", "delete", "deletecollection"}


class HaPlane:
    """etcd and kube-apiserver with an audit log; no controller manager or scheduler.

    Nothing here needs pods: a ModelDeployment is reconciled once its status says which
    generation was applied, and fewer processes keep the audit log to the operators' writes.
    """

    def __init__(self, workdir: Path) -> None:
        assets = find_assets()
        if isinstance(assets, str):
            raise LookupError(assets)
        bare = dataclasses.replace(assets, controller_manager=None, scheduler=None)
        self.plane = ControlPlane(bare, workdir, audit=True)
        self.workdir = workdir
        self.replicas: list[Operator] = []
        self.identities: dict[str, str] = {}  # token id -> replica name

    def __enter__(self) -> HaPlane:
        self.plane.start()
        try:
            plane = self.plane
            self.kube = Kube(
                plane.url, str(plane.ca.pair.cert), (str(plane.admin.cert), str(plane.admin.key))
            )
            kubectl, helm = tool("kubectl"), tool("helm")
            if kubectl is None or helm is None:
                raise LookupError("kubectl and helm are needed: `make setup` installs both")
            self.tools = Tools(kubectl, helm, plane.admin_kubeconfig)
        except BaseException:
            plane.stop()
            raise
        return self

    def __exit__(self, *_: object) -> None:
        for replica in self.replicas:
            replica.stop(timeout=30)
        self.plane.stop()

    def install(self, release: str, namespace: str, *sets: str) -> None:
        args = ["install", release, str(CHART), "-n", namespace, "--create-namespace"]
        for pair in sets:
            args += ["--set", pair]
        self.tools.helm(*args)
        self.tools.kubectl(
            "wait", "--for=condition=Established", "crd/modeldeployments.kubeserve.io",
            "--timeout=60s",
        )  # fmt: skip

    def replica(self, name: str, *, account: str, namespace: str, args: Sequence[str]) -> Operator:
        """A `kubeserve run` as pod ``name`` would run it, with a token of its own."""
        token = self.tools.kubectl(
            "create", "token", account, "-n", namespace, "--duration=2h"
        ).stdout.strip()
        self.identities[token_id(token)] = name
        config = self.plane.write_token_kubeconfig(name, token)
        env = {"POD_NAME": name, "POD_NAMESPACE": namespace}
        operator = Operator(config, self.workdir, env=env, args=args, name=name)
        self.replicas.append(operator)
        return operator

    def writes(self) -> list[Write]:
        assert self.plane.audit_log is not None
        return audit_writes(self.plane.audit_log, self.identities)


def election_args(lease: str, timing: tuple[int, float, float] | None = None) -> list[str]:
    args = ["--leader-elect", f"--leader-election-id={lease}"]
    if timing is not None:
        duration, deadline, retry = timing
        args += [
            f"--leader-elect-lease-duration={duration}",
            f"--leader-elect-renew-deadline={deadline}",
            f"--leader-elect-retry-period={retry}",
        ]
    return args


def token_id(token: str) -> str:
    payload = token.split(".")[1]
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    return str(claims["jti"])


# --- the audit log -----------------------------------------------------------------------


@dataclass(frozen=True)
class Write:
    who: str  # the replica, or "" for any other client
    verb: str
    resource: str
    subresource: str
    namespace: str
    name: str
    received: datetime.datetime
    completed: datetime.datetime
    code: int
    holder: str | None  # a Lease write's holderIdentity

    def __str__(self) -> str:
        what = f"{self.resource}/{self.subresource}" if self.subresource else self.resource
        return (
            f"{self.received.time()} {self.who or '?'} {self.verb} {what} "
            f"{self.namespace}/{self.name} -> {self.code}"
        )


def _time(value: str) -> datetime.datetime:
    return datetime.datetime.fromisoformat(value)


def audit_writes(path: Path, identities: dict[str, str]) -> list[Write]:
    out = []
    for line in path.read_text().splitlines():
        event = json.loads(line)
        if event.get("stage") != "ResponseComplete" or event["verb"] not in WRITE_VERBS:
            continue
        ref = event.get("objectRef") or {}
        extra = (event.get("user") or {}).get("extra") or {}
        ids = [v.removeprefix("JTI=") for v in extra.get(CREDENTIAL_ID, [])]
        spec = (event.get("requestObject") or {}).get("spec") or {}
        out.append(
            Write(
                who=next((identities[i] for i in ids if i in identities), ""),
                verb=event["verb"],
                resource=ref.get("resource", ""),
                subresource=ref.get("subresource", ""),
                namespace=ref.get("namespace", ""),
                name=ref.get("name", ""),
                received=_time(event["requestReceivedTimestamp"]),
                completed=_time(event["stageTimestamp"]),
                code=int((event.get("responseStatus") or {}).get("code", 0)),
                holder=spec.get("holderIdentity") if ref.get("resource") == "leases" else None,
            )
        )
    return out


def lease_writes(writes: list[Write], namespace: str, lease: str) -> list[Write]:
    """The Lease's successful writes, in the order they were committed."""
    done = [
        w
        for w in writes
        if w.resource == "leases" and (w.namespace, w.name) == (namespace, lease) and w.code < 300
    ]
    return sorted(done, key=lambda w: w.completed)


def check_one_writer(
    writes: list[Write], namespace: str, lease: str, replicas: Sequence[str]
) -> list[Write]:
    """Every write a replica sent, failed ones too, was sent while the Lease named it.

    The holder at a write is that of the last Lease write committed before the API server
    received it, and no Lease write naming anyone else was committed while it ran. Fails on
    a standby's write, a write after a release or a takeover, or a write by a replica that
    lost the Lease and went on. Returns the replicas' writes it checked.
    """
    history = lease_writes(writes, namespace, lease)
    checked = [w for w in writes if w.who in replicas and w.resource != "leases"]
    problems = []
    for write in checked:
        before = [w for w in history if w.completed <= write.received]
        holder = before[-1].holder if before else None
        during = [
            w
            for w in history
            if write.received < w.completed <= write.completed and w.holder != write.who
        ]
        if holder != write.who or during:
            problems.append(f"{write} while the Lease named {holder!r}; meanwhile {during}")
    assert not problems, "two writers:\n" + "\n".join(problems[:20])
    return checked


def holders(writes: list[Write], namespace: str, lease: str) -> list[tuple[str, Write]]:
    """Each change of holder (released: "") with the Lease write that made it."""
    out: list[tuple[str, Write]] = []
    for write in lease_writes(writes, namespace, lease):
        holder = write.holder or ""
        if not out or out[-1][0] != holder:
            out.append((holder, write))
    return out


# --- the Lease, watched ------------------------------------------------------------------


class LeaseHistory:
    """Every version of one Lease as a watch delivers it, with our receive time."""

    def __init__(self, kube: Kube, namespace: str, name: str) -> None:
        self.kube = kube
        self.namespace = namespace
        self.name = name
        self.versions: list[tuple[float, dict[str, Any]]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> LeaseHistory:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=15)

    def _run(self) -> None:
        path = f"/apis/{LEASE_API}/namespaces/{self.namespace}/leases"
        selector = f"metadata.name={self.name}"
        version = ""
        while not self._stop.is_set():
            try:
                if not version:  # start, or the watch expired: list, then watch from there
                    page = self.kube.request("GET", path, params={"fieldSelector": selector})
                    version = page["metadata"]["resourceVersion"]
                    self.versions.extend((time.time(), obj) for obj in page["items"])
                for event in self.kube.watch(
                    path, resource_version=version, timeout=2, fieldSelector=selector
                ):
                    if event["type"] == "ERROR":
                        version = ""
                        break
                    obj = event["object"]
                    version = obj["metadata"]["resourceVersion"]
                    if event["type"] in ("ADDED", "MODIFIED"):
                        self.versions.append((time.time(), obj))
                    if self._stop.is_set():
                        return
            except (ApiFailure, OSError):
                time.sleep(0.2)

    def holders(self) -> list[tuple[float, str, int]]:
        """(received, holder, leaseTransitions) at each change of holder."""
        out: list[tuple[float, str, int]] = []
        for at, lease in self.versions:
            spec = lease["spec"]
            holder = spec.get("holderIdentity") or ""
            if not out or out[-1][1] != holder:
                out.append((at, holder, int(spec.get("leaseTransitions") or 0)))
        return out


def current_holder(kube: Kube, namespace: str, lease: str) -> str:
    found = kube.get(LEASE_API, "leases", namespace, lease)
    return str(((found or {}).get("spec") or {}).get("holderIdentity") or "")
