"""The Pod Security checker itself: a compliant pod passes, and every named rule catches a pod
that breaks it (and only that rule fires, so each rule is proven on its own)."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any, cast

import pytest
from tests.policy import pss


def compliant_pod() -> dict[str, Any]:
    """A pod that passes "restricted": the shape every kubeserve pod has."""
    secure = {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    return {
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": 1000,
            "seccompProfile": {"type": "RuntimeDefault"},
            "sysctls": [{"name": "net.ipv4.ip_unprivileged_port_start", "value": "0"}],
            "seLinuxOptions": {"type": "container_t", "level": "s0:c1,c2"},
        },
        "initContainers": [{"name": "init", "image": "i", "securityContext": dict(secure)}],
        "containers": [
            {
                "name": "server",
                "image": "s",
                "ports": [{"containerPort": 8080}],
                "securityContext": {
                    **secure,
                    "capabilities": {"drop": ["ALL"], "add": ["NET_BIND_SERVICE"]},
                },
            }
        ],
        "volumes": [
            {"name": "tmp", "emptyDir": {}},
            {"name": "model", "persistentVolumeClaim": {"claimName": "m"}},
            {"name": "config", "configMap": {"name": "c"}},
            {"name": "creds", "secret": {"secretName": "s"}},
            {"name": "token", "projected": {"sources": []}},
        ],
    }


def server(pod: dict[str, Any]) -> dict[str, Any]:
    container: dict[str, Any] = pod["containers"][0]
    return container


def init(pod: dict[str, Any]) -> dict[str, Any]:
    container: dict[str, Any] = pod["initContainers"][0]
    return container


Mutation = Callable[[dict[str, Any]], None]

# rule name -> ways to break it. Each must make exactly that rule fire.
BREAKS: dict[str, list[Mutation]] = {
    "HostProcess": [
        lambda p: p["securityContext"].update(windowsOptions={"hostProcess": True}),
        lambda p: server(p)["securityContext"].update(windowsOptions={"hostProcess": True}),
    ],
    "Host Namespaces": [
        lambda p: p.update(hostNetwork=True),
        lambda p: p.update(hostPID=True),
        lambda p: p.update(hostIPC=True),
    ],
    "Privileged Containers": [
        lambda p: server(p)["securityContext"].update(privileged=True),
        lambda p: init(p)["securityContext"].update(privileged=True),
    ],
    "Capabilities (baseline)": [
        # SYS_ADMIN is outside the baseline list (and so also breaks the restricted rule).
        lambda p: server(p)["securityContext"]["capabilities"].update(add=["SYS_ADMIN"]),
    ],
    "HostPath Volumes": [
        lambda p: p["volumes"].append({"name": "host", "hostPath": {"path": "/"}}),
    ],
    "Host Ports": [
        lambda p: server(p)["ports"][0].update(hostPort=8080),
    ],
    "AppArmor": [
        lambda p: p["securityContext"].update(appArmorProfile={"type": "Unconfined"}),
        lambda p: server(p)["securityContext"].update(appArmorProfile={"type": "Unconfined"}),
    ],
    "SELinux": [
        lambda p: p["securityContext"]["seLinuxOptions"].update(type="spc_t"),
        lambda p: server(p)["securityContext"].update(seLinuxOptions={"user": "system_u"}),
        lambda p: init(p)["securityContext"].update(seLinuxOptions={"role": "sysadm_r"}),
    ],
    "/proc Mount Type": [
        lambda p: server(p)["securityContext"].update(procMount="Unmasked"),
    ],
    "Seccomp (baseline)": [
        # Unconfined also breaks the restricted seccomp rule.
        lambda p: server(p)["securityContext"].update(seccompProfile={"type": "Unconfined"}),
    ],
    "Sysctls": [
        lambda p: p["securityContext"]["sysctls"].append({"name": "kernel.msgmax", "value": "1"}),
    ],
    "Volume Types": [
        lambda p: p["volumes"].append({"name": "nfs", "nfs": {"server": "s", "path": "/"}}),
        lambda p: p["volumes"].append({"name": "git", "gitRepo": {"repository": "r"}}),
    ],
    "Privilege Escalation": [
        lambda p: server(p)["securityContext"].pop("allowPrivilegeEscalation"),
        lambda p: init(p)["securityContext"].update(allowPrivilegeEscalation=True),
    ],
    "Running as Non-root": [
        lambda p: server(p)["securityContext"].update(runAsNonRoot=False),
        lambda p: p["securityContext"].update(runAsNonRoot=False),
        lambda p: (
            p["securityContext"].pop("runAsNonRoot"),
            init(p)["securityContext"].pop("runAsNonRoot"),
        ),
    ],
    "Running as Non-root user": [
        lambda p: p["securityContext"].update(runAsUser=0),
        lambda p: init(p)["securityContext"].update(runAsUser=0),
    ],
    "Seccomp (restricted)": [
        lambda p: (
            p["securityContext"].pop("seccompProfile"),
            init(p)["securityContext"].pop("seccompProfile"),
        ),
        lambda p: server(p)["securityContext"].update(seccompProfile={"type": "Localhost-ish"}),
    ],
    "Capabilities (restricted)": [
        lambda p: server(p)["securityContext"].pop("capabilities"),
        lambda p: server(p)["securityContext"]["capabilities"].update(add=["CHOWN"]),
    ],
}
# A violation of these also violates their restricted counterpart, by the standard's design.
ALSO_FIRES = {
    "Capabilities (baseline)": {"Capabilities (restricted)"},
    "Seccomp (baseline)": {"Seccomp (restricted)"},
    "HostPath Volumes": {"Volume Types"},
}


def fired(pod: dict[str, Any], level: str = pss.RESTRICTED) -> set[str]:
    return {message.split(":", 1)[0] for message in pss.violations(pod, level=level)}


def test_the_compliant_pod_passes_restricted() -> None:
    assert pss.violations(compliant_pod()) == []


def test_every_rule_has_a_breaking_case() -> None:
    assert set(BREAKS) == set(pss.rules(pss.RESTRICTED))


@pytest.mark.parametrize(
    ("rule", "mutation"),
    [(rule, m) for rule, mutations in BREAKS.items() for m in mutations],
    ids=[f"{rule}-{i}" for rule, mutations in BREAKS.items() for i in range(len(mutations))],
)
def test_each_rule_catches_its_violation(rule: str, mutation: Mutation) -> None:
    pod = copy.deepcopy(compliant_pod())
    mutation(pod)
    assert fired(pod) == {rule} | ALSO_FIRES.get(rule, set())
    if rule in pss.BASELINE_RULES:
        assert fired(pod, pss.BASELINE) == {rule}
    else:
        assert fired(pod, pss.BASELINE) == set()


def test_apparmor_annotations() -> None:
    prefix = pss.APPARMOR_ANNOTATION_PREFIX
    ok = {f"{prefix}server": "runtime/default", f"{prefix}init": "localhost/my-profile"}
    assert pss.violations(compliant_pod(), annotations=ok) == []
    bad = {f"{prefix}server": "unconfined"}
    assert [m.split(":")[0] for m in pss.violations(compliant_pod(), annotations=bad)] == [
        "AppArmor"
    ]


def test_pod_level_settings_cover_containers_without_their_own() -> None:
    pod = compliant_pod()
    for container in (server(pod), init(pod)):
        container["securityContext"].pop("runAsNonRoot")
        container["securityContext"].pop("seccompProfile")
    assert pss.violations(pod) == []


def test_ephemeral_containers_are_checked() -> None:
    pod = compliant_pod()
    pod["ephemeralContainers"] = [
        {"name": "debug", "image": "d", "securityContext": {"privileged": True}}
    ]
    assert {"Privileged Containers", "Privilege Escalation", "Capabilities (restricted)"} <= fired(
        pod
    )
    assert any("ephemeralContainers[0](debug)" in m for m in pss.violations(pod))


def test_windows_pods_are_exempt_where_the_standard_says() -> None:
    pod = compliant_pod()
    pod["os"] = {"name": "windows"}
    for container in (server(pod), init(pod)):
        for field in ("allowPrivilegeEscalation", "capabilities", "seccompProfile"):
            container["securityContext"].pop(field)
    pod["securityContext"].pop("seccompProfile")
    assert pss.violations(pod) == []


def test_unknown_level_is_an_error() -> None:
    with pytest.raises(ValueError):
        pss.violations(compliant_pod(), level="privileged-ish")


@pytest.mark.parametrize(
    "obj",
    [
        {"kind": "Pod", "metadata": {"name": "p"}, "spec": compliant_pod()},
        {
            "kind": "Deployment",
            "metadata": {"name": "d"},
            "spec": {"template": {"spec": compliant_pod()}},
        },
        {
            "kind": "StatefulSet",
            "metadata": {"name": "s"},
            "spec": {"template": {"spec": compliant_pod()}},
        },
        {
            "kind": "DaemonSet",
            "metadata": {"name": "s"},
            "spec": {"template": {"spec": compliant_pod()}},
        },
        {"kind": "Job", "metadata": {"name": "j"}, "spec": {"template": {"spec": compliant_pod()}}},
        {
            "kind": "CronJob",
            "metadata": {"name": "c"},
            "spec": {"jobTemplate": {"spec": {"template": {"spec": compliant_pod()}}}},
        },
        {"kind": "PodTemplate", "metadata": {"name": "t"}, "template": {"spec": compliant_pod()}},
    ],
    ids=lambda obj: obj["kind"],
)
def test_pod_specs_finds_the_pod_template(obj: dict[str, Any]) -> None:
    specs = list(pss.pod_specs(obj))
    assert specs == [compliant_pod()]
    assert pss.object_violations(obj) == []
    for spec in specs:
        cast(dict[str, Any], spec)["hostNetwork"] = True
    name = f"{obj['kind']}/{obj['metadata']['name']}"
    assert pss.object_violations(obj) == [
        f"{name}: Host Namespaces: spec.hostNetwork must be false or unset"
    ]


def test_kinds_without_pods_yield_nothing() -> None:
    assert list(pss.pod_specs({"kind": "Service", "spec": {"ports": []}})) == []
