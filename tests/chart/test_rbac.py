"""RBAC: the chart grants exactly what operator/kubeserve/rbac.py says, no wildcards, and the
namespaced mode grants nothing cluster-scoped but reading Nodes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from chartlib import NAMESPACE, ROOT, VALUES, VALUES_FILES, Render, of_kind, one

from kubeserve import api, rbac
from kubeserve.resources import kinds

pytestmark = pytest.mark.chart

RBAC_KINDS = ("ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding")
NAMESPACED = VALUES / "namespaced.yaml"
LEADER_ELECTION = "-leader-election"


def watched_roles(objects: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    """Roles or RoleBindings for the watched namespaces (not leader election's)."""
    return [
        o for o in of_kind(objects, kind) if not o["metadata"]["name"].endswith(LEADER_ELECTION)
    ]


def rules_of(obj: dict[str, Any]) -> list[dict[str, Any]]:
    rules: list[dict[str, Any]] = obj.get("rules") or []
    return rules


def named(objects: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    found = [o for o in of_kind(objects, kind) if o["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} {name}, got {len(found)}"
    return found[0]


def diff(rendered: list[dict[str, Any]], expected: list[dict[str, Any]]) -> str:
    got, want = rbac.permissions(rendered), rbac.permissions(expected)
    return f"missing from the chart: {sorted(want - got)}; extra in the chart: {sorted(got - want)}"


@pytest.mark.parametrize("values", VALUES_FILES, ids=lambda p: p.stem)
def test_no_wildcards(render: Render, values: Path) -> None:
    for obj in render(values):
        for rule in rules_of(obj):
            for field in ("apiGroups", "resources", "verbs", "resourceNames", "nonResourceURLs"):
                assert "*" not in (rule.get(field) or []), f"{obj['metadata']['name']}: {rule}"
                assert not any("*" in item for item in rule.get(field) or []), rule


def test_rbac_py_has_no_wildcards_or_duplicates() -> None:
    for rule_list in (
        rbac.rules(namespaced=True),
        rbac.rules(namespaced=False),
        rbac.cluster_rules(),
    ):
        triples = [
            (g, r, v)
            for rule in rule_list
            for g in rule["apiGroups"]
            for r in rule["resources"]
            for v in rule["verbs"]
        ]
        assert len(triples) == len(set(triples))
        assert not any("*" in part for triple in triples for part in triple)


def test_cluster_mode_grants_exactly_rbac_py(render: Render) -> None:
    objects = render()
    assert watched_roles(objects, "Role") == [] and watched_roles(objects, "RoleBinding") == []
    main = rules_of(named(objects, "ClusterRole", "kubeserve"))
    assert rbac.permissions(main) == rbac.permissions(rbac.rules(namespaced=False)), diff(
        main, rbac.rules(namespaced=False)
    )
    nodes = rules_of(named(objects, "ClusterRole", "kubeserve-nodes"))
    assert rbac.permissions(nodes) == rbac.permissions(rbac.cluster_rules()), diff(
        nodes, rbac.cluster_rules()
    )
    assert len(of_kind(objects, "ClusterRole")) == 2


def test_namespaced_mode_grants_exactly_rbac_py_in_each_namespace(render: Render) -> None:
    objects = render(NAMESPACED)
    watched = yaml.safe_load(NAMESPACED.read_text())["watchNamespaces"]
    roles = watched_roles(objects, "Role")
    assert sorted(r["metadata"]["namespace"] for r in roles) == sorted(watched)
    for role in roles:
        assert rbac.permissions(rules_of(role)) == rbac.permissions(rbac.rules(namespaced=True)), (
            diff(rules_of(role), rbac.rules(namespaced=True))
        )
    bindings = watched_roles(objects, "RoleBinding")
    assert sorted(b["metadata"]["namespace"] for b in bindings) == sorted(watched)
    for binding in bindings:
        assert binding["roleRef"] == {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "Role",
            "name": "kubeserve",
        }
        assert binding["subjects"] == [
            {"kind": "ServiceAccount", "name": "kubeserve", "namespace": NAMESPACE}
        ]


def test_namespaced_mode_has_no_cluster_permission_but_reading_nodes(render: Render) -> None:
    objects = render(NAMESPACED)
    cluster_rules = [rule for role in of_kind(objects, "ClusterRole") for rule in rules_of(role)]
    assert rbac.permissions(cluster_rules) == {
        ("", "nodes", "get"),
        ("", "nodes", "list"),
        ("", "nodes", "watch"),
    }
    # And the only ClusterRoleBinding binds that read-only role.
    binding = one(objects, "ClusterRoleBinding")
    assert binding["roleRef"]["name"] == "kubeserve-nodes"


def test_bindings_name_the_operator_service_account(render: Render) -> None:
    for values in VALUES_FILES:
        objects = render(values)
        account = one(objects, "ServiceAccount")["metadata"]
        pod = one(objects, "Deployment")["spec"]["template"]["spec"]
        assert pod["serviceAccountName"] == account["name"]
        for kind in ("ClusterRoleBinding", "RoleBinding"):
            for binding in of_kind(objects, kind):
                assert binding["subjects"] == [
                    {"kind": "ServiceAccount", "name": account["name"], "namespace": NAMESPACE}
                ]
                roles = of_kind(objects, binding["roleRef"]["kind"])
                assert binding["roleRef"]["name"] in {r["metadata"]["name"] for r in roles}


@pytest.mark.parametrize("values", VALUES_FILES, ids=lambda p: p.stem)
def test_leader_election_may_touch_only_its_own_lease_in_the_release_namespace(
    render: Render, values: Path
) -> None:
    objects = render(values)
    pod = one(objects, "Deployment")["spec"]["template"]["spec"]
    args = pod["containers"][0]["args"]
    lease = next(a.split("=", 1)[1] for a in args if a.startswith("--leader-election-id="))
    assert "--leader-elect" in args
    role = named(objects, "Role", f"{lease}{LEADER_ELECTION}")
    assert role["metadata"]["namespace"] == NAMESPACE
    # Exactly rbac.py's rules, resourceNames included (permissions() ignores them).
    assert rules_of(role) == rbac.lease_rules(lease)
    assert [r.get("resourceNames") for r in rules_of(role)] == [None, [lease]]
    binding = named(objects, "RoleBinding", f"{lease}{LEADER_ELECTION}")
    assert binding["metadata"]["namespace"] == NAMESPACE
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": role["metadata"]["name"],
    }
    # Leases appear nowhere else: no cluster-wide or watched-namespace grant of them.
    others = [o for o in objects if o["kind"] in ("ClusterRole", "Role") and o is not role]
    assert not any("leases" in rule["resources"] for o in others for rule in rules_of(o))


def test_each_release_elects_on_its_own_lease(render: Render) -> None:
    """Shards are releases: two releases never share a Lease (nor its Role)."""

    def lease(objects: list[dict[str, Any]]) -> str:
        args = one(objects, "Deployment")["spec"]["template"]["spec"]["containers"][0]["args"]
        return next(a.split("=", 1)[1] for a in args if a.startswith("--leader-election-id="))

    assert lease(render(None, "fullnameOverride=shard-a")) == "shard-a"
    assert lease(render(None, "fullnameOverride=shard-b")) == "shard-b"


def test_rbac_can_be_left_to_the_user(render: Render) -> None:
    objects = render(None, "rbac.create=false")
    assert not any(obj["kind"] in RBAC_KINDS for obj in objects)


# ---------------------------------------------------------------------------------------------
# rbac.py against the code it describes


def test_every_child_kind_has_exactly_the_operators_verbs() -> None:
    granted = rbac.permissions(rbac.rules(namespaced=True))
    for kind in kinds.CHILD_KINDS:
        verbs = {v for g, r, v in granted if (g, r) == (kind.group, kind.plural)}
        expected = {"get", "list", "create", "patch", "delete"}
        if not kind.optional:  # watched, to restore a deleted or edited child at once
            expected |= {"watch"}
        assert verbs == expected, kind


def test_model_deployments_and_events() -> None:
    granted = rbac.permissions(rbac.rules(namespaced=True))

    def verbs(group: str, resource: str) -> set[str]:
        return {v for g, r, v in granted if (g, r) == (group, resource)}

    assert verbs(api.GROUP, api.PLURAL) == {"get", "list", "watch"}
    assert verbs(api.GROUP, f"{api.PLURAL}/status") == {"get", "patch"}
    assert verbs(api.GROUP, f"{api.PLURAL}/finalizers") == {"update"}
    assert verbs("", "events") == {"create"}
    assert verbs("", "pods") == {"list", "watch"}  # read-only: cold starts
    # Nothing else: every namespaced permission is for our CRD, a child kind, events or pods.
    known = {
        (api.GROUP, api.PLURAL),
        (api.GROUP, f"{api.PLURAL}/status"),
        (api.GROUP, f"{api.PLURAL}/finalizers"),
        ("", "events"),
        ("", "pods"),
    }
    known |= {(k.group, k.plural) for k in kinds.CHILD_KINDS}
    assert {(g, r) for g, r, _ in granted} == known


def test_namespaced_rules_name_only_namespaced_resources() -> None:
    """A Role cannot grant cluster-scoped resources; check none slipped in."""
    crd = yaml.safe_load((ROOT / "crds" / f"{api.PLURAL}.{api.GROUP}.yaml").read_text())
    assert crd["spec"]["scope"] == "Namespaced"
    cluster_scoped = {
        "nodes",
        "namespaces",
        "customresourcedefinitions",
        "persistentvolumes",
        "clusterroles",
        "clusterrolebindings",
        "storageclasses",
    }
    for _g, resource, _v in rbac.permissions(rbac.rules(namespaced=True)):
        assert resource.split("/")[0] not in cluster_scoped


def test_cluster_mode_adds_only_kopfs_crd_observation() -> None:
    extra = rbac.permissions(rbac.rules(namespaced=False)) - rbac.permissions(
        rbac.rules(namespaced=True)
    )
    assert extra == {
        ("apiextensions.k8s.io", "customresourcedefinitions", "list"),
        ("apiextensions.k8s.io", "customresourcedefinitions", "watch"),
    }


def test_a_new_child_kind_without_chart_rbac_fails_the_comparison(
    render: Render, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The guard this file exists for: CHILD_KINDS grows, the chart does not -> a difference."""
    extra = kinds.ChildKind("batch/v1", "Job", "jobs")
    monkeypatch.setattr(rbac, "CHILD_KINDS", (*kinds.CHILD_KINDS, extra))
    chart = rules_of(named(render(), "ClusterRole", "kubeserve"))
    missing = rbac.permissions(rbac.rules(namespaced=False)) - rbac.permissions(chart)
    assert missing == {("batch", "jobs", v) for v in ("get", "list", "create", "patch", "delete")}
