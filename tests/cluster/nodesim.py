"""A node simulator that does what kwok does: Nodes without kubelets, pods without containers.

It registers Node objects (CPU, memory, pods, GPU and MIG capacity, GPU Feature Discovery
labels, taints), keeps them alive by renewing their Leases and Ready heartbeats, and plays
the kubelet for every pod the real scheduler binds to one of them: it writes the pod's status
according to its fate, and finishes the deletion of terminating pods.

A pod's fate comes from its model-server image tag, so a test picks it with ``spec.image``:
``:crashloop`` crash-loops, ``:never-ready`` runs but never passes its readiness probe,
anything else becomes Running and Ready.

A pod that becomes Ready gets the timestamps of a cold start (``COLD_START``), counted from
its creation as a kubelet would write them: the storage initializer runs, then reports its
download in its termination message, then the server starts and becomes Ready. They lie a
few seconds in the future of the write; nothing in the control plane minds.
"""

from __future__ import annotations

import datetime
import enum
import itertools
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from kubeapi import ApiFailure, Kube

logger = logging.getLogger(__name__)
LEASE_RENEW_SECONDS = 10.0  # the node lifecycle controller gives up after 40 s
WATCH_SECONDS = 2


class Fate(enum.Enum):
    READY = "ready"
    NEVER_READY = "never-ready"
    CRASH_LOOP = "crashloop"


def fate_by_image(pod: dict[str, Any]) -> Fate:
    for container in pod["spec"].get("containers", []):
        tag = container.get("image", "").rpartition(":")[2]
        for fate in (Fate.CRASH_LOOP, Fate.NEVER_READY):
            if tag == fate.value:
                return fate
    return Fate.READY


@dataclass(frozen=True)
class SimNode:
    name: str
    cpu: str = "16"
    memory: str = "64Gi"
    pods: str = "110"
    extended: dict[str, str] = field(default_factory=dict)  # nvidia.com/gpu, MIG slices, ...
    labels: dict[str, str] = field(default_factory=dict)
    taints: tuple[dict[str, str], ...] = ()


def gpu_node(
    name: str,
    product: str,
    *,
    count: int = 1,
    memory_mib: int = 81920,
    mig: dict[str, int] | None = None,
) -> SimNode:
    """A node as the NVIDIA GPU Operator labels and taints it (GFD labels, mixed MIG)."""
    labels = {
        "nvidia.com/gpu.present": "true",
        "nvidia.com/gpu.product": product,
        "nvidia.com/gpu.memory": str(memory_mib),
        "nvidia.com/gpu.count": str(count),
    }
    if mig:
        labels["nvidia.com/mig.strategy"] = "mixed"
        extended = {f"nvidia.com/mig-{profile}": str(n) for profile, n in mig.items()}
    else:
        extended = {"nvidia.com/gpu": str(count)}
    taint = {"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}
    return SimNode(name, extended=extended, labels=labels, taints=(taint,))


@dataclass(frozen=True)
class ColdStartTimeline:
    """Seconds after the pod's creation, and what the storage initializer reports."""

    init_started: int = 1
    init_finished: int = 5
    server_started: int = 6
    ready: int = 10
    download_report: str = '{"downloadSeconds":3.25,"bytes":524288,"cache":"miss"}'


COLD_START = ColdStartTimeline()


def _after(created: str, seconds: int) -> str:
    start = datetime.datetime.strptime(created, "%Y-%m-%dT%H:%M:%SZ")
    return (start + datetime.timedelta(seconds=seconds)).strftime("%Y-%m-%dT%H:%M:%SZ")


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _micro_now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class NodeSimulator:
    def __init__(self, kube: Kube) -> None:
        self.kube = kube
        self.nodes: dict[str, SimNode] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._ips = itertools.count(2)
        self._lock = threading.Lock()

    # --- nodes ----------------------------------------------------------------------

    def add(self, node: SimNode) -> None:
        capacity = {"cpu": node.cpu, "memory": node.memory, "pods": node.pods, **node.extended}
        self.kube.create(
            {
                "apiVersion": "v1",
                "kind": "Node",
                "metadata": {
                    "name": node.name,
                    "labels": {
                        "kubernetes.io/hostname": node.name,
                        "kubernetes.io/os": "linux",
                        "kubernetes.io/arch": "amd64",
                        "type": "simulated",
                        **node.labels,
                    },
                },
                "spec": {"taints": list(node.taints)} if node.taints else {},
            },
            "nodes",
        )
        self.kube.patch(
            "v1",
            "nodes",
            None,
            node.name,
            {
                "status": {
                    "capacity": capacity,
                    "allocatable": capacity,
                    "conditions": self._node_conditions(),
                    "nodeInfo": {
                        "kubeletVersion": "v1.32.0-sim",
                        "architecture": "amd64",
                        "operatingSystem": "linux",
                    },
                }
            },
            subresource="status",
        )
        with self._lock:
            self.nodes[node.name] = node
        self._renew(node.name)

    def remove(self, name: str) -> None:
        with self._lock:
            self.nodes.pop(name, None)
        self.kube.delete("v1", "nodes", None, name)
        self.kube.delete("coordination.k8s.io/v1", "leases", "kube-node-lease", name)

    def _node_conditions(self) -> list[dict[str, str]]:
        now = _now()
        ok = {"lastHeartbeatTime": now, "lastTransitionTime": now}
        return [
            {
                "type": "Ready",
                "status": "True",
                "reason": "KubeletReady",
                "message": "simulated",
                **ok,
            },
            *(
                {"type": kind, "status": "False", "reason": "Simulated", "message": "", **ok}
                for kind in ("MemoryPressure", "DiskPressure", "PIDPressure")
            ),
        ]

    def _renew(self, name: str) -> None:
        lease = {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {"name": name, "namespace": "kube-node-lease"},
            "spec": {"holderIdentity": name, "leaseDurationSeconds": 40, "renewTime": _micro_now()},
        }
        self.kube.apply(lease, "leases", "nodesim")
        self.kube.patch(
            "v1",
            "nodes",
            None,
            name,
            {"status": {"conditions": self._node_conditions()}},
            subresource="status",
            ctype="application/strategic-merge-patch+json",
        )

    # --- the loop -------------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="nodesim", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=WATCH_SECONDS + 15)

    def _run(self) -> None:
        renewed = time.monotonic()
        version = ""
        while not self._stop.is_set():
            try:
                if not version:
                    version = self._sync_all()
                version = self._watch(version)
                if time.monotonic() - renewed > LEASE_RENEW_SECONDS:
                    for name in list(self.nodes):
                        self._renew(name)
                    renewed = time.monotonic()
            except ApiFailure as exc:
                if exc.status != 410:  # Gone: the watch is too old; list again
                    logger.warning("node simulator: %s", exc)
                version = ""
            except Exception as exc:  # the API server restarting, say: list again soon
                logger.warning("node simulator: %s: %s", type(exc).__name__, exc)
                version = ""
                self._stop.wait(0.5)

    def _sync_all(self) -> str:
        page = self.kube.request("GET", "/api/v1/pods", params={"fieldSelector": "spec.nodeName!="})
        for pod in page["items"]:
            self._play_kubelet(pod)
        return str(page["metadata"]["resourceVersion"])

    def _watch(self, version: str) -> str:
        for event in self.kube.watch(
            "/api/v1/pods",
            resource_version=version,
            timeout=WATCH_SECONDS,
            fieldSelector="spec.nodeName!=",
        ):
            obj = event["object"]
            if event["type"] == "ERROR":  # 410 Gone, say, after an API-server restart
                raise RuntimeError(f"watch error: {obj.get('message')}")
            version = obj["metadata"]["resourceVersion"]
            if event["type"] in ("ADDED", "MODIFIED"):
                self._play_kubelet(obj)
            if self._stop.is_set():
                break
        return version

    def _play_kubelet(self, pod: dict[str, Any]) -> None:
        meta, status = pod["metadata"], pod.get("status") or {}
        if pod["spec"].get("nodeName") not in self.nodes:
            return
        if meta.get("deletionTimestamp"):
            # A kubelet would stop the containers, then remove the pod for good.
            self.kube.delete(
                "v1",
                "pods",
                meta["namespace"],
                meta["name"],
                gracePeriodSeconds=0,
                preconditions={"uid": meta["uid"]},
            )
            return
        if status.get("podIP"):
            return  # already started
        self.kube.patch(
            "v1",
            "pods",
            meta["namespace"],
            meta["name"],
            {"status": self._pod_status(pod, fate_by_image(pod))},
            subresource="status",
        )

    def _pod_status(self, pod: dict[str, Any], fate: Fate) -> dict[str, Any]:
        now = _now()
        created = pod["metadata"]["creationTimestamp"]
        timeline = COLD_START
        started = _after(created, timeline.server_started)
        n = next(self._ips)
        ip = f"10.244.{n // 250}.{n % 250 + 2}"
        ready = fate is Fate.READY
        containers = []
        for container in pod["spec"]["containers"]:
            entry: dict[str, Any] = {
                "name": container["name"],
                "image": container["image"],
                "imageID": f"sim://{container['image']}",
                "ready": ready,
                "started": True,
                "restartCount": 0,
                "state": {"running": {"startedAt": started}},
            }
            if fate is Fate.CRASH_LOOP:
                entry.update(
                    started=False,
                    restartCount=5,
                    state={
                        "waiting": {
                            "reason": "CrashLoopBackOff",
                            "message": "back-off 5m0s restarting failed container",
                        }
                    },
                    lastState={
                        "terminated": {
                            "exitCode": 1,
                            "reason": "Error",
                            "startedAt": now,
                            "finishedAt": now,
                        }
                    },
                )
            containers.append(entry)
        inits = [
            {
                "name": c["name"],
                "image": c["image"],
                "imageID": f"sim://{c['image']}",
                "ready": True,
                "restartCount": 0,
                "state": {
                    "terminated": {
                        "exitCode": 0,
                        "reason": "Completed",
                        "message": timeline.download_report,
                        "startedAt": _after(created, timeline.init_started),
                        "finishedAt": _after(created, timeline.init_finished),
                    }
                },
            }
            for c in pod["spec"].get("initContainers", [])
        ]

        def cond(kind: str, value: bool) -> dict[str, str]:
            at = _after(created, timeline.ready) if value and kind.endswith("Ready") else now
            return {"type": kind, "status": str(value), "lastTransitionTime": at}

        return {
            "phase": "Running",
            "hostIP": "127.0.0.1",
            "podIP": ip,
            "podIPs": [{"ip": ip}],
            "startTime": now,
            "conditions": [
                cond("PodScheduled", True),
                cond("Initialized", True),
                cond("ContainersReady", ready),
                cond("Ready", ready),
            ],
            "containerStatuses": containers,
            "initContainerStatuses": inits,
        }
