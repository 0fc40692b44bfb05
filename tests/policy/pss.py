"""A Pod Security Standards checker: the "baseline" and "restricted" profiles, offline.

Written from the published Pod Security Standards (kubernetes.io, "Pod Security Standards",
policy version v1.32 and later): every control below is a named rule, and ``violations``
returns one message per broken control, naming the rule and the field, so a test failure
says what to fix. The Pod Security admission controller in a real cluster (enforce label
``pod-security.kubernetes.io/enforce: restricted``) is the authority; the kind e2e suite
enforces it on its namespaces.

    from tests.policy.pss import violations, pod_specs, object_violations

    for spec in pod_specs(deployment):
        assert violations(spec) == []

``violations(spec)`` checks a PodSpec; pass ``annotations=`` (the pod template's) to also check
the legacy AppArmor annotations. ``pod_specs(obj)`` yields the PodSpecs of a Pod or of any
workload with a pod template (Deployment, ReplicaSet, StatefulSet, DaemonSet, Job, CronJob,
ReplicationController, PodTemplate). ``object_violations(obj)`` does both and prefixes each
message with ``Kind/name``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any

BASELINE = "baseline"
RESTRICTED = "restricted"
LEVELS = (BASELINE, RESTRICTED)

# Baseline "Capabilities": adding anything beyond this list is forbidden.
BASELINE_CAPABILITIES = frozenset(
    {
        "AUDIT_WRITE",
        "CHOWN",
        "DAC_OVERRIDE",
        "FOWNER",
        "FSETID",
        "KILL",
        "MKNOD",
        "NET_BIND_SERVICE",
        "SETFCAP",
        "SETGID",
        "SETPCAP",
        "SETUID",
        "SYS_CHROOT",
    }
)
# Restricted "Capabilities": drop ALL; add at most this.
RESTRICTED_ADDABLE_CAPABILITIES = frozenset({"NET_BIND_SERVICE"})
# Baseline "Sysctls": the safe set (namespaced, isolated from the node).
SAFE_SYSCTLS = frozenset(
    {
        "kernel.shm_rmid_forced",
        "net.ipv4.ip_local_port_range",
        "net.ipv4.ip_unprivileged_port_start",
        "net.ipv4.tcp_syncookies",
        "net.ipv4.ping_group_range",
        "net.ipv4.ip_local_reserved_ports",
        "net.ipv4.tcp_keepalive_time",
        "net.ipv4.tcp_fin_timeout",
        "net.ipv4.tcp_keepalive_intvl",
        "net.ipv4.tcp_keepalive_probes",
    }
)
# Baseline "SELinux": allowed seLinuxOptions.type values ("" and unset too).
SELINUX_TYPES = frozenset(
    {"container_t", "container_init_t", "container_kvm_t", "container_engine_t"}
)
# Baseline "AppArmor": allowed profile types (field) and annotation values.
APPARMOR_TYPES = frozenset({"RuntimeDefault", "Localhost"})
APPARMOR_ANNOTATION_PREFIX = "container.apparmor.security.beta.kubernetes.io/"
# Restricted "Volume Types": the only volume sources allowed.
RESTRICTED_VOLUME_TYPES = frozenset(
    {
        "configMap",
        "csi",
        "downwardAPI",
        "emptyDir",
        "ephemeral",
        "persistentVolumeClaim",
        "projected",
        "secret",
    }
)
# Restricted "Seccomp": allowed profile types.
SECCOMP_RESTRICTED_TYPES = frozenset({"RuntimeDefault", "Localhost"})

CONTAINER_FIELDS = ("initContainers", "containers", "ephemeralContainers")

Spec = Mapping[str, Any]
Rule = Callable[[Spec, Mapping[str, str]], list[str]]


def containers(spec: Spec) -> Iterator[tuple[str, Mapping[str, Any]]]:
    """Every container of every kind, with a path such as ``initContainers[0](name)``."""
    for field in CONTAINER_FIELDS:
        for index, container in enumerate(spec.get(field) or []):
            yield f"{field}[{index}]({container.get('name', '?')})", container


def _pod_sc(spec: Spec) -> Mapping[str, Any]:
    return spec.get("securityContext") or {}


def _sc(container: Mapping[str, Any]) -> Mapping[str, Any]:
    return container.get("securityContext") or {}


def _is_windows(spec: Spec) -> bool:
    return ((spec.get("os") or {}).get("name")) == "windows"


# ---------------------------------------------------------------------------------------------
# Baseline controls


def host_process(spec: Spec, _annotations: Mapping[str, str]) -> list[str]:
    """Baseline "HostProcess": Windows HostProcess containers are forbidden."""
    out = []
    if (_pod_sc(spec).get("windowsOptions") or {}).get("hostProcess"):
        out.append("spec.securityContext.windowsOptions.hostProcess must be false or unset")
    for path, c in containers(spec):
        if (_sc(c).get("windowsOptions") or {}).get("hostProcess"):
            out.append(f"{path}.securityContext.windowsOptions.hostProcess must be false or unset")
    return out


def host_namespaces(spec: Spec, _annotations: Mapping[str, str]) -> list[str]:
    """Baseline "Host Namespaces": hostNetwork, hostPID and hostIPC are forbidden."""
    return [
        f"spec.{field} must be false or unset"
        for field in ("hostNetwork", "hostPID", "hostIPC")
        if spec.get(field)
    ]


def privileged(spec: Spec, _annotations: Mapping[str, str]) -> list[str]:
    """Baseline "Privileged Containers": privileged must be false or unset."""
    return [
        f"{path}.securityContext.privileged must be false or unset"
        for path, c in containers(spec)
        if _sc(c).get("privileged")
    ]


def capabilities_baseline(spec: Spec, _annotations: Mapping[str, str]) -> list[str]:
    """Baseline "Capabilities": add only capabilities from the baseline list."""
    out = []
    for path, c in containers(spec):
        added = set((_sc(c).get("capabilities") or {}).get("add") or [])
        extra = sorted(added - BASELINE_CAPABILITIES)
        if extra:
            out.append(f"{path}.securityContext.capabilities.add has non-default {extra}")
    return out


def host_path_volumes(spec: Spec, _annotations: Mapping[str, str]) -> list[str]:
    """Baseline "HostPath Volumes": hostPath volumes are forbidden."""
    return [
        f"spec.volumes[{i}]({v.get('name', '?')}) must not be hostPath"
        for i, v in enumerate(spec.get("volumes") or [])
        if "hostPath" in v
    ]


def host_ports(spec: Spec, _annotations: Mapping[str, str]) -> list[str]:
    """Baseline "Host Ports": hostPort must be unset or 0."""
    return [
        f"{path}.ports[{i}].hostPort must be unset or 0"
        for path, c in containers(spec)
        for i, port in enumerate(c.get("ports") or [])
        if port.get("hostPort")
    ]


def apparmor(spec: Spec, annotations: Mapping[str, str]) -> list[str]:
    """Baseline "AppArmor": only RuntimeDefault or Localhost profiles (or none)."""
    out = []
    profile_type = (_pod_sc(spec).get("appArmorProfile") or {}).get("type")
    if profile_type is not None and profile_type not in APPARMOR_TYPES:
        out.append(f"spec.securityContext.appArmorProfile.type {profile_type!r} is not allowed")
    for path, c in containers(spec):
        profile_type = (_sc(c).get("appArmorProfile") or {}).get("type")
        if profile_type is not None and profile_type not in APPARMOR_TYPES:
            out.append(
                f"{path}.securityContext.appArmorProfile.type {profile_type!r} is not allowed"
            )
    for key, value in annotations.items():
        if key.startswith(APPARMOR_ANNOTATION_PREFIX) and not (
            value == "runtime/default" or value.startswith("localhost/")
        ):
            out.append(f"annotation {key}={value!r} is not an allowed AppArmor profile")
    return out


def selinux(spec: Spec, _annotations: Mapping[str, str]) -> list[str]:
    """Baseline "SELinux": no custom user or role; type only from the container types."""
    out = []
    options = [("spec.securityContext", _pod_sc(spec).get("seLinuxOptions") or {})]
    options += [
        (f"{path}.securityContext", _sc(c).get("seLinuxOptions") or {})
        for path, c in containers(spec)
    ]
    for where, opts in options:
        if opts.get("type") not in (None, "", *SELINUX_TYPES):
            out.append(f"{where}.seLinuxOptions.type {opts['type']!r} is not allowed")
        for field in ("user", "role"):
            if opts.get(field):
                out.append(f"{where}.seLinuxOptions.{field} must be unset")
    return out


def proc_mount(spec: Spec, _annotations: Mapping[str, str]) -> list[str]:
    """Baseline "/proc Mount Type": only the Default /proc mount."""
    return [
        f"{path}.securityContext.procMount must be Default or unset"
        for path, c in containers(spec)
        if _sc(c).get("procMount") not in (None, "Default")
    ]


def seccomp_baseline(spec: Spec, _annotations: Mapping[str, str]) -> list[str]:
    """Baseline "Seccomp": the Unconfined profile is forbidden."""
    out = []
    if (_pod_sc(spec).get("seccompProfile") or {}).get("type") == "Unconfined":
        out.append("spec.securityContext.seccompProfile.type must not be Unconfined")
    for path, c in containers(spec):
        if (_sc(c).get("seccompProfile") or {}).get("type") == "Unconfined":
            out.append(f"{path}.securityContext.seccompProfile.type must not be Unconfined")
    return out


def sysctls(spec: Spec, _annotations: Mapping[str, str]) -> list[str]:
    """Baseline "Sysctls": only the safe sysctls."""
    return [
        f"spec.securityContext.sysctls[{i}] {s.get('name')!r} is not a safe sysctl"
        for i, s in enumerate(_pod_sc(spec).get("sysctls") or [])
        if s.get("name") not in SAFE_SYSCTLS
    ]


# ---------------------------------------------------------------------------------------------
# Restricted controls (in addition to every baseline control)


def volume_types(spec: Spec, _annotations: Mapping[str, str]) -> list[str]:
    """Restricted "Volume Types": only configMap, csi, downwardAPI, emptyDir, ephemeral,
    persistentVolumeClaim, projected and secret volumes."""
    out = []
    for i, volume in enumerate(spec.get("volumes") or []):
        kinds = set(volume) - {"name"}
        bad = sorted(kinds - RESTRICTED_VOLUME_TYPES)
        if bad:
            out.append(f"spec.volumes[{i}]({volume.get('name', '?')}) type {bad} is not allowed")
    return out


def privilege_escalation(spec: Spec, _annotations: Mapping[str, str]) -> list[str]:
    """Restricted "Privilege Escalation": allowPrivilegeEscalation must be false (not just
    unset). Windows pods are exempt."""
    if _is_windows(spec):
        return []
    return [
        f"{path}.securityContext.allowPrivilegeEscalation must be false"
        for path, c in containers(spec)
        if _sc(c).get("allowPrivilegeEscalation") is not False
    ]


def run_as_non_root(spec: Spec, _annotations: Mapping[str, str]) -> list[str]:
    """Restricted "Running as Non-root": runAsNonRoot true on the pod, or on every container;
    no container may set it false."""
    out = []
    pod_value = _pod_sc(spec).get("runAsNonRoot")
    for path, c in containers(spec):
        value = _sc(c).get("runAsNonRoot")
        if value is False:
            out.append(f"{path}.securityContext.runAsNonRoot must not be false")
        elif value is None and pod_value is not True:
            out.append(
                f"{path}: runAsNonRoot must be true (in the container or the pod securityContext)"
            )
    if pod_value is False:
        out.append("spec.securityContext.runAsNonRoot must not be false")
    return out


def run_as_user(spec: Spec, _annotations: Mapping[str, str]) -> list[str]:
    """Restricted "Running as Non-root user": runAsUser must not be 0 anywhere."""
    out = []
    if _pod_sc(spec).get("runAsUser") == 0:
        out.append("spec.securityContext.runAsUser must not be 0")
    for path, c in containers(spec):
        if _sc(c).get("runAsUser") == 0:
            out.append(f"{path}.securityContext.runAsUser must not be 0")
    return out


def seccomp_restricted(spec: Spec, _annotations: Mapping[str, str]) -> list[str]:
    """Restricted "Seccomp": RuntimeDefault or Localhost, set on the pod or on every
    container. Windows pods are exempt."""
    if _is_windows(spec):
        return []
    out = []
    pod_type = (_pod_sc(spec).get("seccompProfile") or {}).get("type")
    if pod_type is not None and pod_type not in SECCOMP_RESTRICTED_TYPES:
        out.append(f"spec.securityContext.seccompProfile.type {pod_type!r} is not allowed")
    for path, c in containers(spec):
        ctype = (_sc(c).get("seccompProfile") or {}).get("type")
        if ctype is not None and ctype not in SECCOMP_RESTRICTED_TYPES:
            out.append(f"{path}.securityContext.seccompProfile.type {ctype!r} is not allowed")
        elif ctype is None and pod_type is None:
            out.append(
                f"{path}: seccompProfile.type must be RuntimeDefault or Localhost "
                "(in the container or the pod securityContext)"
            )
    return out


def capabilities_restricted(spec: Spec, _annotations: Mapping[str, str]) -> list[str]:
    """Restricted "Capabilities": drop ALL; add only NET_BIND_SERVICE. Windows pods are
    exempt."""
    if _is_windows(spec):
        return []
    out = []
    for path, c in containers(spec):
        caps = _sc(c).get("capabilities") or {}
        if "ALL" not in (caps.get("drop") or []):
            out.append(f"{path}.securityContext.capabilities.drop must include ALL")
        extra = sorted(set(caps.get("add") or []) - RESTRICTED_ADDABLE_CAPABILITIES)
        if extra:
            out.append(f"{path}.securityContext.capabilities.add may only be NET_BIND_SERVICE")
    return out


BASELINE_RULES: dict[str, Rule] = {
    "HostProcess": host_process,
    "Host Namespaces": host_namespaces,
    "Privileged Containers": privileged,
    "Capabilities (baseline)": capabilities_baseline,
    "HostPath Volumes": host_path_volumes,
    "Host Ports": host_ports,
    "AppArmor": apparmor,
    "SELinux": selinux,
    "/proc Mount Type": proc_mount,
    "Seccomp (baseline)": seccomp_baseline,
    "Sysctls": sysctls,
}
RESTRICTED_RULES: dict[str, Rule] = {
    "Volume Types": volume_types,
    "Privilege Escalation": privilege_escalation,
    "Running as Non-root": run_as_non_root,
    "Running as Non-root user": run_as_user,
    "Seccomp (restricted)": seccomp_restricted,
    "Capabilities (restricted)": capabilities_restricted,
}


def rules(level: str = RESTRICTED) -> dict[str, Rule]:
    if level not in LEVELS:
        raise ValueError(f"level must be one of {LEVELS}, not {level!r}")
    if level == BASELINE:
        return dict(BASELINE_RULES)
    return {**BASELINE_RULES, **RESTRICTED_RULES}


def violations(
    pod_spec: Spec,
    *,
    level: str = RESTRICTED,
    annotations: Mapping[str, str] | None = None,
) -> list[str]:
    """One ``"<rule>: <what is wrong>"`` message per violation of the profile; [] if it passes."""
    out: list[str] = []
    for name, rule in rules(level).items():
        out.extend(f"{name}: {message}" for message in rule(pod_spec, annotations or {}))
    return out


def pod_templates(obj: Mapping[str, Any]) -> Iterator[tuple[Mapping[str, Any], Spec]]:
    """(pod metadata, PodSpec) for a Pod or each pod template of a workload object."""
    kind = obj.get("kind")
    spec = obj.get("spec") or {}
    if kind == "Pod":
        yield obj.get("metadata") or {}, spec
        return
    if kind == "PodTemplate":
        template = obj.get("template") or {}
    elif kind == "CronJob":
        template = ((spec.get("jobTemplate") or {}).get("spec") or {}).get("template") or {}
    elif kind in {
        "Deployment",
        "ReplicaSet",
        "StatefulSet",
        "DaemonSet",
        "Job",
        "ReplicationController",
    }:
        template = spec.get("template") or {}
    else:
        return
    yield template.get("metadata") or {}, template.get("spec") or {}


def pod_specs(obj: Mapping[str, Any]) -> Iterator[Spec]:
    """The PodSpecs inside ``obj`` (none for kinds that run no pods)."""
    for _metadata, spec in pod_templates(obj):
        yield spec


def object_violations(obj: Mapping[str, Any], *, level: str = RESTRICTED) -> list[str]:
    """Violations of every pod template in ``obj``, prefixed with ``Kind/name``."""
    name = f"{obj.get('kind')}/{(obj.get('metadata') or {}).get('name', '?')}"
    return [
        f"{name}: {message}"
        for metadata, spec in pod_templates(obj)
        for message in violations(spec, level=level, annotations=metadata.get("annotations"))
    ]
