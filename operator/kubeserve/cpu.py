"""A container's CPU budget, and the thread settings each runtime gets from it.

A process in a container sees the node's cores (``os.cpu_count()``), not its CPU limit: on a
64-core node with a 2-CPU limit, a runtime that sizes its thread pools to the cores runs 64
threads on 2 CPUs' worth of quota, and the kernel throttles it every period. The limit lives in
the cgroup: cgroup v2's ``cpu.max`` ("max 100000": no limit; "200000 100000": 2 CPUs), or
cgroup v1's ``cpu.cfs_quota_us`` / ``cpu.cfs_period_us`` (quota -1: no limit).

Rules (docs/runtimes.md, "Threads"):

- budget: the limit in CPUs, rounded up, at least 1 (a 500m limit is 1 thread; 2.5 CPUs is 3,
  which may throttle a little, where 2 would leave half a CPU unused); never more than the CPUs
  the process may run on (``os.sched_getaffinity``). No limit: the affinity count when it is
  smaller than the machine (a cpuset or ``taskset``), else no budget: the runtime keeps its own
  default, which is right for a process that may use the whole machine.
- ONNX Runtime: intra-op = budget. Inter-op stays at ORT's default: its pool exists only in
  parallel execution mode, which our server does not use.
- TF Serving: intra-op = budget; inter-op = 2, or 1 on a 1-CPU budget. Each inter-op thread
  runs one ready op, which fans out over the intra-op pool: inter = budget would let budget x
  budget threads compete for budget CPUs. Two keep one blocking op (a queue, a loop) from
  stalling a session and let two requests' serial parts overlap.
- TorchServe: workers (processes, each with a copy of the model) default to 1; each gets
  budget // workers threads (OMP_NUM_THREADS, MKL_NUM_THREADS), at least 1, so workers x threads
  never exceeds the budget unless more workers than CPUs are asked for.

The module is stdlib only: the ONNX server image imports it at startup.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

# A file in cgroup v2 cpu.max format that replaces the cgroup lookup: for tests, and for
# machines whose cgroup mounts are not where we look.
CPU_MAX_ENV = "KUBESERVE_CPU_MAX"
CGROUP_ROOT = Path("/sys/fs/cgroup")
PROC_CGROUP = Path("/proc/self/cgroup")
# TF Serving's inter-op pool (module docstring).
TFSERVING_INTER_OP = 2


@dataclass(frozen=True)
class CpuBudget:
    """Whole CPUs this process may use; ``cpus`` None: no limit, runtime defaults apply."""

    cpus: int | None
    source: str  # where the figure came from, for logs


@dataclass(frozen=True)
class Threads:
    """One runtime's thread settings; None leaves the runtime's own default."""

    intra_op: int | None = None
    inter_op: int | None = None
    workers: int | None = None  # TorchServe's worker processes


def cpus_from_cores(cores: float) -> int:
    """A CPU amount (a limit, a quota / period) as whole threads: rounded up, at least 1."""
    if not cores > 0:
        raise ValueError(f"a CPU amount must be positive, got {cores}")
    return max(1, math.ceil(round(cores, 6)))


def parse_cpu_max(text: str) -> int | None:
    """cgroup v2 ``cpu.max``: "$MAX $PERIOD" in microseconds; MAX "max" is no limit."""
    parts = text.split()
    if not parts or len(parts) > 2:
        raise ValueError(f"cpu.max: expected '$MAX $PERIOD', got {text.strip()!r}")
    if parts[0] == "max":
        return None
    period = parts[1] if len(parts) == 2 else "100000"  # the kernel's default period
    return parse_cfs_quota(parts[0], period)


def parse_cfs_quota(quota: str, period: str) -> int | None:
    """cgroup v1 ``cpu.cfs_quota_us`` and ``cpu.cfs_period_us``; a quota of -1 is no limit."""
    try:
        quota_us, period_us = int(quota.strip()), int(period.strip())
    except ValueError:
        raise ValueError(f"CPU quota: expected integers, got {quota!r} / {period!r}") from None
    if quota_us < 0:
        return None
    if quota_us == 0 or period_us <= 0:
        raise ValueError(f"CPU quota: {quota_us} / {period_us} is not a quota")
    return cpus_from_cores(quota_us / period_us)


def _cgroup_paths(proc_cgroup: Path) -> tuple[str | None, str | None]:
    """This process's cgroup path in the v2 hierarchy and in v1's cpu controller."""
    v2 = v1 = None
    try:
        lines = proc_cgroup.read_text().splitlines()
    except OSError:
        return None, None
    for line in lines:
        hierarchy, _, rest = line.partition(":")
        controllers, _, path = rest.partition(":")
        if hierarchy == "0" and controllers == "":
            v2 = path
        elif "cpu" in controllers.split(","):
            v1 = path
    return v2, v1


def _up_from(base: Path, path: str) -> list[Path]:
    """base/path and each of its parents up to base: a parent's quota bounds its children."""
    here = base / path.lstrip("/")
    found = [here]
    while here != base and base in here.parents:
        here = here.parent
        found.append(here)
    return found


def cgroup_limit(
    root: Path = CGROUP_ROOT, proc_cgroup: Path = PROC_CGROUP
) -> tuple[int | None, str]:
    """The tightest CPU limit on this process's cgroup and its ancestors, and where it is."""
    v2, v1 = _cgroup_paths(proc_cgroup)
    limits: list[tuple[int, str]] = []
    if (root / "cgroup.controllers").is_file():  # the unified (v2) hierarchy is at root
        for folder in _up_from(root, v2 or "/"):
            try:
                cpus = parse_cpu_max((folder / "cpu.max").read_text())
            except (OSError, ValueError):
                continue
            if cpus is not None:
                limits.append((cpus, str(folder / "cpu.max")))
    else:
        for mount in (root / "cpu", root / "cpu,cpuacct"):
            if not (mount / "cpu.cfs_quota_us").is_file():
                continue
            for folder in _up_from(mount, v1 or "/"):
                try:
                    cpus = parse_cfs_quota(
                        (folder / "cpu.cfs_quota_us").read_text(),
                        (folder / "cpu.cfs_period_us").read_text(),
                    )
                except (OSError, ValueError):
                    continue
                if cpus is not None:
                    limits.append((cpus, str(folder / "cpu.cfs_quota_us")))
            break
    if not limits:
        return None, "no cgroup CPU limit"
    cpus, where = min(limits)
    return cpus, where


def read_budget(
    *,
    env: Mapping[str, str] | None = None,
    root: Path = CGROUP_ROOT,
    proc_cgroup: Path = PROC_CGROUP,
    affinity: int | None = None,
    machine: int | None = None,
) -> CpuBudget:
    """This process's CPU budget: the cgroup limit (or $KUBESERVE_CPU_MAX), then affinity."""
    env = os.environ if env is None else env
    affinity = len(os.sched_getaffinity(0)) if affinity is None else affinity
    machine = (os.cpu_count() or affinity) if machine is None else machine
    override = env.get(CPU_MAX_ENV)
    if override:
        limit = parse_cpu_max(Path(override).read_text())
        where = f"{CPU_MAX_ENV}={override}"
    else:
        limit, where = cgroup_limit(root, proc_cgroup)
    if limit is not None:
        if affinity < limit:
            return CpuBudget(affinity, f"{where} ({limit} CPUs), bounded by CPU affinity")
        return CpuBudget(limit, where)
    if affinity < machine:
        return CpuBudget(affinity, f"CPU affinity ({affinity} of {machine} CPUs)")
    return CpuBudget(None, f"{where}; the runtime's default")


# -- per-runtime rules (module docstring) -------------------------------------------------


def onnxruntime_threads(
    cpus: int | None, *, intra_op: int | None = None, inter_op: int | None = None
) -> Threads:
    return Threads(intra_op=intra_op or cpus, inter_op=inter_op)


def tfserving_threads(
    cpus: int | None, *, intra_op: int | None = None, inter_op: int | None = None
) -> Threads:
    derived_inter = min(TFSERVING_INTER_OP, cpus) if cpus else None
    return Threads(intra_op=intra_op or cpus, inter_op=inter_op or derived_inter)


def torchserve_threads(
    cpus: int | None, *, intra_op: int | None = None, workers: int | None = None
) -> Threads:
    workers = workers or 1
    per_worker = max(1, cpus // workers) if cpus else None
    return Threads(intra_op=intra_op or per_worker, workers=workers)


def torch_env(threads: Threads) -> list[dict[str, str]]:
    """The environment that sizes torch's (OpenMP's, MKL's) pool in each TorchServe worker."""
    if threads.intra_op is None:
        return []
    value = str(threads.intra_op)
    return [
        {"name": "OMP_NUM_THREADS", "value": value},
        {"name": "MKL_NUM_THREADS", "value": value},
    ]
