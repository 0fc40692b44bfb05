"""The operator on a real control plane, under the chart's RBAC: a ModelDeployment's life.

The real controller manager turns our Deployments into pods, the real scheduler binds them
to simulated nodes, the node simulator marks them Ready, and the garbage collector follows
our owner references.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from cluster_env import ROOT, Operator, md, model_deployment, ready_at_generation
from e2elib import Kube as Tools
from kubeapi import Kube, condition, eventually

from kubeserve.resources.kinds import CHILD_KINDS

pytestmark = pytest.mark.usefixtures("operator", "scheduler")
READY_SECONDS = 60


def children(kube: Kube, namespace: str, name: str) -> dict[str, dict[str, Any]]:
    """The children present, by kind, named after the ModelDeployment."""
    found = {}
    for kind in CHILD_KINDS:
        if kind.optional:
            continue  # KEDA's and its HTTP add-on's CRDs may be absent
        obj = kube.get(kind.api_version, kind.plural, namespace, name)
        if obj is not None:
            found[kind.kind] = obj
    return found


def provide_claim(kube: Kube, namespace: str, claim: str) -> None:
    """A PersistentVolumeClaim bound to a volume, as a cluster's storage would provide it."""
    volume = f"{namespace}-{claim}"
    kube.create(
        {
            "apiVersion": "v1",
            "kind": "PersistentVolume",
            "metadata": {"name": volume},
            "spec": {
                "capacity": {"storage": "1Gi"},
                "accessModes": ["ReadOnlyMany"],
                "hostPath": {"path": "/models"},
                "claimRef": {"namespace": namespace, "name": claim},
            },
        },
        "persistentvolumes",
    )
    kube.create(
        {
            "apiVersion": "v1",
            "kind": "PersistentVolumeClaim",
            "metadata": {"name": claim, "namespace": namespace},
            "spec": {
                "accessModes": ["ReadOnlyMany"],
                "resources": {"requests": {"storage": "1Gi"}},
                "volumeName": volume,
                "storageClassName": "",
            },
        },
        "persistentvolumeclaims",
    )


def examples() -> list[Path]:
    return sorted((ROOT / "examples").glob("*.yaml"))


@pytest.mark.parametrize("path", examples(), ids=lambda p: p.stem)
def test_each_example_becomes_ready_with_owned_children(
    path: Path, tools: Tools, kube: Kube, namespace: str, request: pytest.FixtureRequest
) -> None:
    body = yaml.safe_load(path.read_text())
    name = body["metadata"]["name"]
    engine = body["spec"].get("autoscaling", {}).get("engine")
    if engine in ("keda", "keda-http"):
        request.getfixturevalue("third_party_crds")
    uri = body["spec"]["model"]["uri"]
    if uri.startswith("pvc://"):
        provide_claim(kube, namespace, uri.removeprefix("pvc://").split("/")[0])
    tools.kubectl("apply", "-n", namespace, "-f", str(path))
    if body["spec"].get("autoscaling", {}).get("minReplicas") == 0:
        # Scaled to zero by KEDA, which does not run here: the ScaledObject (or the HTTP
        # add-on's HTTPScaledObject) is the proof.
        api, plural = (
            ("http.keda.sh/v1alpha1", "httpscaledobjects")
            if engine == "keda-http"
            else ("keda.sh/v1alpha1", "scaledobjects")
        )
        scaled = eventually(
            lambda: kube.get(api, plural, namespace, name),
            timeout=READY_SECONDS,
            what=f"the {plural}",
        )
        assert scaled["spec"]["scaleTargetRef"]["name"] == name
        return
    tools.kubectl(
        "wait", "--for=condition=Ready", f"md/{name}", "-n", namespace,
        f"--timeout={READY_SECONDS}s", timeout=READY_SECONDS + 30,
    )  # fmt: skip
    obj = md(kube, namespace, name)
    assert obj is not None
    assert obj["status"]["url"].startswith(f"http://{name}.{namespace}.svc.cluster.local:")
    assert obj["status"]["observedGeneration"] == obj["metadata"]["generation"]
    owned = children(kube, namespace, name)
    assert {"Deployment", "Service"} <= set(owned)
    for child in owned.values():
        (ref,) = child["metadata"]["ownerReferences"]
        assert (ref["kind"], ref["name"], ref["uid"], ref["controller"]) == (
            "ModelDeployment", name, obj["metadata"]["uid"], True,
        )  # fmt: skip
    pods = kube.list("v1", "pods", namespace, labelSelector=f"app.kubernetes.io/instance={name}")
    assert pods and all(p["spec"].get("nodeName") for p in pods)


def test_an_edit_reaches_the_deployment(tools: Tools, kube: Kube, namespace: str) -> None:
    tools.apply(model_deployment("edited", namespace, replicas=1))
    ready_at_generation(kube, namespace, "edited")
    env = [{"name": "X", "value": "1"}]
    tools.apply(model_deployment("edited", namespace, replicas=3, env=env))

    def rolled() -> dict[str, Any] | None:
        obj = md(kube, namespace, "edited")
        deploy = kube.get("apps/v1", "deployments", namespace, "edited")
        done = (
            obj["status"].get("observedGeneration") == obj["metadata"]["generation"]
            and deploy["spec"]["replicas"] == 3
            and obj["status"].get("readyReplicas") == 3
        )
        return deploy if done else None

    deploy = eventually(rolled, timeout=READY_SECONDS, what="3 ready replicas")
    assert env[0] in deploy["spec"]["template"]["spec"]["containers"][0]["env"]


def test_deleted_and_hand_edited_children_are_restored(
    kube: Kube, tools: Tools, namespace: str
) -> None:
    tools.apply(model_deployment("drift", namespace))
    ready_at_generation(kube, namespace, "drift")
    original = kube.get("v1", "services", namespace, "drift")
    kube.delete("v1", "services", namespace, "drift")
    restored = eventually(
        lambda: kube.get("v1", "services", namespace, "drift"), timeout=20, what="Service back"
    )
    assert restored["metadata"]["uid"] != original["metadata"]["uid"]
    assert restored["spec"]["selector"] == original["spec"]["selector"]
    # A hand edit of a field we set, by another field manager, is taken back.
    kube.patch("apps/v1", "deployments", namespace, "drift", {"spec": {"replicas": 4}})
    eventually(
        lambda: kube.get("apps/v1", "deployments", namespace, "drift")["spec"]["replicas"] == 1,
        timeout=20,
        what="replicas restored to 1",
    )


def test_the_log_tells_each_change_once_and_nothing_per_event(
    kube: Kube, tools: Tools, namespace: str, operator: Operator
) -> None:
    """kopf logged a line per watch event (4,600 for 1,000 models); a user wants the changes."""
    tools.apply(model_deployment("logged", namespace, replicas=1))
    ready_at_generation(kube, namespace, "logged")
    kube.delete("v1", "services", namespace, "logged")
    eventually(lambda: kube.get("v1", "services", namespace, "logged"), timeout=20, what="Service")
    tools.apply(model_deployment("logged", namespace, replicas=2))
    ready_at_generation(kube, namespace, "logged")

    lines = [line for line in operator.log_text().splitlines() if f"{namespace}/logged" in line]
    messages = [line.partition(f"[{namespace}/logged] ")[2] for line in lines]
    for change in (
        "generation 1 of the spec applied",
        "Service logged was deleted; restoring it",
        "generation 2 of the spec applied",
    ):
        assert messages.count(change) == 1, lines
    assert messages.count("Ready is True (ReplicasReady: 1/1 replicas ready)") == 1, lines
    assert not [line for line in lines if "Handler" in line], lines
    # Ready may turn False while generation 2 rolls out, and back: nothing more.
    assert len(lines) <= 7, lines


def test_unwanted_children_are_pruned(kube: Kube, tools: Tools, namespace: str) -> None:
    autoscaled = {"minReplicas": 2, "maxReplicas": 4, "metrics": [{"type": "cpu", "target": 70}]}
    tools.apply(model_deployment("pruned", namespace, autoscaling=autoscaled))
    eventually(
        lambda: kube.get("autoscaling/v2", "horizontalpodautoscalers", namespace, "pruned"),
        timeout=30,
        what="the HPA",
    )
    tools.apply(model_deployment("pruned", namespace, replicas=1))
    eventually(
        lambda: kube.get("autoscaling/v2", "horizontalpodautoscalers", namespace, "pruned") is None,
        timeout=30,
        what="the HPA pruned",
    )
    assert kube.get("apps/v1", "deployments", namespace, "pruned")


def test_deleting_a_model_deployment_collects_its_children(
    kube: Kube, tools: Tools, namespace: str
) -> None:
    tools.apply(model_deployment("collected", namespace))
    ready_at_generation(kube, namespace, "collected")
    assert children(kube, namespace, "collected")
    tools.kubectl("delete", "md", "collected", "-n", namespace, "--timeout=30s")
    eventually(
        lambda: (
            not children(kube, namespace, "collected") and not kube.list("v1", "pods", namespace)
        ),
        timeout=30,
        what="children and pods collected",
    )


def test_objects_we_do_not_own_are_left_alone(kube: Kube, tools: Tools, namespace: str) -> None:
    foreign = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "taken", "namespace": namespace, "labels": {"team": "theirs"}},
        "spec": {"selector": {"app": "theirs"}, "ports": [{"port": 80}]},
    }
    kube.create(foreign, "services")
    tools.apply(model_deployment("taken", namespace))

    def conflict() -> dict[str, Any] | None:
        cond = condition(md(kube, namespace, "taken"), "Ready")
        return cond if cond and cond["reason"] == "OwnershipConflict" else None

    cond = eventually(conflict, timeout=30, what="OwnershipConflict")
    assert "Service" in cond["message"] and "taken" in cond["message"]
    service = kube.get("v1", "services", namespace, "taken")
    assert service["spec"]["selector"] == {"app": "theirs"}
    assert not service["metadata"].get("ownerReferences")
    tools.kubectl("delete", "md", "taken", "-n", namespace)
    assert kube.get("v1", "services", namespace, "taken") is not None


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"runtime": "triton"}, "Unsupported value"),
        ({"gpu": {"count": 2, "migProfile": "1g.10gb"}}, "migProfile"),
        ({"autoscaling": {"minReplicas": 3, "maxReplicas": 2}}, "maxReplicas"),
        ({"autoscaling": {"metrics": [{"type": "cpu", "target": 0}]}}, "target"),
    ],
)
def test_invalid_specs_are_refused_at_apply(
    spec: dict[str, Any], message: str, tools: Tools, namespace: str
) -> None:
    body = model_deployment("refused", namespace)
    body["spec"].update(spec)
    result = tools.kubectl("apply", "-f", "-", input=yaml.safe_dump(body), check=False)
    assert result.returncode != 0
    assert "is invalid" in result.stderr and message in result.stderr, result.stderr


def test_generated_children_pass_restricted_pod_security(
    kube: Kube, tools: Tools, namespace: str
) -> None:
    # The namespace enforces "restricted": the ReplicaSet controller's pod creation would be
    # refused by the API server's PodSecurity admission, and no pod would exist.
    tools.apply(model_deployment("secure", namespace))
    ready_at_generation(kube, namespace, "secure")
    events = kube.list("v1", "events", namespace)
    assert not [e for e in events if "violates PodSecurity" in e.get("message", "")]


def test_third_party_schemas_accept_what_we_generate(
    kube: Kube, tools: Tools, namespace: str, third_party_crds: Path
) -> None:
    keda = {
        "engine": "keda",
        "minReplicas": 1,
        "maxReplicas": 3,
        "metrics": [{"type": "requestsPerSecond", "target": 10}],
    }
    tools.apply(model_deployment("keda", namespace, autoscaling=keda))
    scaled = eventually(
        lambda: kube.get("keda.sh/v1alpha1", "scaledobjects", namespace, "keda"),
        timeout=30,
        what="the ScaledObject",
    )
    assert scaled["spec"]["triggers"][0]["type"] == "prometheus"
    obj = md(kube, namespace, "keda")
    assert condition(obj, "AutoscalerReady") is not None


def test_the_operator_restarted_mid_reconcile_converges_without_duplicates(
    kube: Kube, tools: Tools, namespace: str, operator: Operator
) -> None:
    names = [f"m{i}" for i in range(12)]
    tools.apply([model_deployment(name, namespace) for name in names])
    operator.stop(sig=9)  # SIGKILL: no cleanup, mid-way through the burst
    operator.start()
    for name in names:
        ready_at_generation(kube, namespace, name)
    deployments = kube.list("apps/v1", "deployments", namespace)
    services = kube.list("v1", "services", namespace)
    assert sorted(d["metadata"]["name"] for d in deployments) == sorted(names)
    assert sorted(s["metadata"]["name"] for s in services) == sorted(names)
    for obj in deployments + services:
        assert len(obj["metadata"]["ownerReferences"]) == 1


def test_a_spec_only_the_operator_can_judge_gets_invalid_spec(
    kube: Kube, tools: Tools, namespace: str
) -> None:
    # Affinity is kept as free-form by the CRD; the operator checks it before any apply.
    bad_affinity = {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [{"matchExpressions": [{"key": "zone", "operator": "Near"}]}]
            }
        }
    }
    tools.apply(model_deployment("judged", namespace, affinity=bad_affinity))

    def invalid() -> dict[str, Any] | None:
        cond = condition(md(kube, namespace, "judged"), "Ready")
        return cond if cond and cond["reason"] == "InvalidSpec" else None

    cond = eventually(invalid, timeout=30, what="Ready=False/InvalidSpec")
    assert "affinity" in cond["message"]
    assert kube.get("apps/v1", "deployments", namespace, "judged") is None


def test_a_network_policy_is_accepted_and_selects_the_pods(
    kube: Kube, tools: Tools, namespace: str
) -> None:
    tools.apply(model_deployment("fenced", namespace, networkPolicy={"enabled": True}))
    ready_at_generation(kube, namespace, "fenced")
    policy = kube.get("networking.k8s.io/v1", "networkpolicies", namespace, "fenced")
    service = kube.get("v1", "services", namespace, "fenced")
    assert policy["spec"]["podSelector"]["matchLabels"] == service["spec"]["selector"]
