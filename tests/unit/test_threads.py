"""Threads that match the container (issue 16): the CPU budget, the per-runtime rules, and
what the rendered pods of each runtime carry."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from kubeserve import cpu
from kubeserve.api import ModelDeployment
from kubeserve.config import OperatorConfig
from kubeserve.render import render

CFG = OperatorConfig()


@pytest.mark.parametrize(
    ("text", "cpus"),
    [
        ("max 100000\n", None),
        ("max", None),
        ("200000 100000\n", 2),
        ("100000 100000", 1),
        ("150000 100000", 2),  # 1.5 CPUs: rounded up
        ("50000 100000", 1),  # 500m: at least 1
        ("1000 100000", 1),  # 10m
        ("400000 200000", 2),  # another period
        ("6400000 100000", 64),
        ("300000", 3),  # period omitted: the kernel's 100000
    ],
)
def test_cpu_max(text: str, cpus: int | None) -> None:
    assert cpu.parse_cpu_max(text) == cpus


@pytest.mark.parametrize("text", ["", "max 100000 extra", "lots 100000", "0 100000", "1 0"])
def test_cpu_max_refuses_what_is_not_a_quota(text: str) -> None:
    with pytest.raises(ValueError):
        cpu.parse_cpu_max(text)


@pytest.mark.parametrize(
    ("quota", "period", "cpus"),
    [("-1\n", "100000\n", None), ("200000", "100000", 2), ("250000", "100000", 3)],
)
def test_cgroup_v1_quota(quota: str, period: str, cpus: int | None) -> None:
    assert cpu.parse_cfs_quota(quota, period) == cpus


@pytest.mark.parametrize(
    ("cores", "cpus"), [(0.001, 1), (0.5, 1), (1, 1), (1.0000001, 1), (2.5, 3), (64, 64)]
)
def test_cores_round_up_to_whole_threads(cores: float, cpus: int) -> None:
    assert cpu.cpus_from_cores(cores) == cpus


def _v2(tmp_path: Path, own: str | None, parent: str | None) -> tuple[Path, Path]:
    root = tmp_path / "cgroup"
    (root / "kubepods" / "pod1").mkdir(parents=True)
    (root / "cgroup.controllers").write_text("cpu memory\n")
    (root / "cpu.stat").write_text("")  # the root cgroup has no cpu.max
    if parent:
        (root / "kubepods" / "cpu.max").write_text(parent)
    if own:
        (root / "kubepods" / "pod1" / "cpu.max").write_text(own)
    proc = tmp_path / "proc-cgroup"
    proc.write_text("0::/kubepods/pod1\n")
    return root, proc


@pytest.mark.parametrize(
    ("own", "parent", "cpus"),
    [
        ("200000 100000\n", None, 2),
        ("max 100000\n", None, None),
        ("400000 100000\n", "200000 100000\n", 2),  # the tighter ancestor bounds it
        ("100000 100000\n", "max 100000\n", 1),
        (None, None, None),
    ],
)
def test_cgroup_v2_limit_is_the_tightest_on_the_path(
    tmp_path: Path, own: str | None, parent: str | None, cpus: int | None
) -> None:
    root, proc = _v2(tmp_path, own, parent)
    assert cpu.cgroup_limit(root, proc)[0] == cpus


def test_cgroup_v2_namespaced_container_reads_its_root(tmp_path: Path) -> None:
    # With a cgroup namespace (the kubelet's default), the container's cgroup is "/".
    root = tmp_path / "cgroup"
    root.mkdir()
    (root / "cgroup.controllers").write_text("cpu\n")
    (root / "cpu.max").write_text("300000 100000\n")
    proc = tmp_path / "proc-cgroup"
    proc.write_text("0::/\n")
    assert cpu.cgroup_limit(root, proc) == (3, str(root / "cpu.max"))


def test_cgroup_v1_quota_of_the_cpu_controller(tmp_path: Path) -> None:
    root = tmp_path / "cgroup"
    mine = root / "cpu" / "bench"
    mine.mkdir(parents=True)
    for folder, quota in ((root / "cpu", "-1"), (mine, "100000")):
        (folder / "cpu.cfs_quota_us").write_text(f"{quota}\n")
        (folder / "cpu.cfs_period_us").write_text("100000\n")
    proc = tmp_path / "proc-cgroup"
    proc.write_text("4:memory:/x\n1:cpu:/bench\n2:cpuacct:/\n0::/\n")
    assert cpu.cgroup_limit(root, proc)[0] == 1
    proc.write_text("1:cpu:/\n0::/\n")
    assert cpu.cgroup_limit(root, proc)[0] is None


def _budget(tmp_path: Path, cpu_max: str | None, affinity: int, machine: int) -> cpu.CpuBudget:
    env = {}
    if cpu_max is not None:
        (tmp_path / "cpu.max").write_text(cpu_max)
        env[cpu.CPU_MAX_ENV] = str(tmp_path / "cpu.max")
    nothing = tmp_path / "no-cgroup"
    return cpu.read_budget(
        env=env, root=nothing, proc_cgroup=nothing, affinity=affinity, machine=machine
    )


@pytest.mark.parametrize(
    ("cpu_max", "affinity", "machine", "cpus"),
    [
        ("200000 100000", 64, 64, 2),  # the case: 2 CPUs on a 64-core node
        ("250000 100000", 64, 64, 3),
        ("800000 100000", 2, 64, 2),  # a limit above the cpuset: the cpuset
        ("max 100000", 64, 64, None),  # no limit: the runtime's default
        (None, 64, 64, None),
        (None, 1, 2, 1),  # no limit, but taskset -c 0
    ],
)
def test_budget(
    tmp_path: Path, cpu_max: str | None, affinity: int, machine: int, cpus: int | None
) -> None:
    assert _budget(tmp_path, cpu_max, affinity, machine).cpus == cpus


def test_budget_names_its_source(tmp_path: Path) -> None:
    assert cpu.CPU_MAX_ENV in _budget(tmp_path, "100000 100000", 4, 4).source
    assert "default" in _budget(tmp_path, None, 4, 4).source
    assert "affinity" in _budget(tmp_path, None, 1, 4).source


RULES = [
    # runtime, budget, overrides, expected Threads
    ("onnxruntime", None, {}, cpu.Threads()),
    ("onnxruntime", 2, {}, cpu.Threads(intra_op=2)),
    ("onnxruntime", 2, {"intra_op": 4, "inter_op": 2}, cpu.Threads(intra_op=4, inter_op=2)),
    ("tfserving", None, {}, cpu.Threads()),
    ("tfserving", 1, {}, cpu.Threads(intra_op=1, inter_op=1)),
    ("tfserving", 2, {}, cpu.Threads(intra_op=2, inter_op=2)),
    ("tfserving", 16, {}, cpu.Threads(intra_op=16, inter_op=2)),
    ("tfserving", None, {"intra_op": 3}, cpu.Threads(intra_op=3)),
    ("tfserving", 8, {"inter_op": 4}, cpu.Threads(intra_op=8, inter_op=4)),
    ("torchserve", None, {}, cpu.Threads(workers=1)),
    ("torchserve", 4, {}, cpu.Threads(intra_op=4, workers=1)),
    ("torchserve", 4, {"workers": 2}, cpu.Threads(intra_op=2, workers=2)),
    ("torchserve", 5, {"workers": 2}, cpu.Threads(intra_op=2, workers=2)),  # never above
    ("torchserve", 2, {"workers": 4}, cpu.Threads(intra_op=1, workers=4)),  # at least 1
    ("torchserve", 4, {"intra_op": 3, "workers": 2}, cpu.Threads(intra_op=3, workers=2)),
]


@pytest.mark.parametrize(("runtime", "budget", "overrides", "expected"), RULES)
def test_rules(
    runtime: str, budget: int | None, overrides: dict[str, int], expected: cpu.Threads
) -> None:
    rule = {
        "onnxruntime": cpu.onnxruntime_threads,
        "tfserving": cpu.tfserving_threads,
        "torchserve": cpu.torchserve_threads,
    }[runtime]
    assert rule(budget, **overrides) == expected


# -- rendered pods ------------------------------------------------------------------------


def md(runtime: str, **spec: Any) -> ModelDeployment:
    uri = "pvc://models/m" if runtime == "torchserve" else "s3://bucket/m"
    return ModelDeployment.parse(
        {
            "apiVersion": "kubeserve.io/v1alpha1",
            "kind": "ModelDeployment",
            "metadata": {"name": "m", "namespace": "ml"},
            "spec": {"runtime": runtime, "model": {"uri": uri}, **spec},
        }
    )


def rendered(model: ModelDeployment) -> tuple[dict[str, Any], dict[str, str]]:
    """The server container and the ConfigMap's data ({} without one)."""
    objs = {o["kind"]: o for o in render(model, CFG)}
    container = objs["Deployment"]["spec"]["template"]["spec"]["containers"][0]
    return container, (objs["ConfigMap"]["data"] if "ConfigMap" in objs else {})


def thread_args(container: dict[str, Any]) -> list[str]:
    return [a for a in container["args"] if "op-threads" in a or "op_parallelism" in a]


def omp(container: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e["value"] for e in container["env"] if e["name"].endswith("_NUM_THREADS")}


def limit(cpu_limit: str | int) -> dict[str, Any]:
    return {"resources": {"limits": {"cpu": cpu_limit, "memory": "1Gi"}}}


POD_TABLE = [
    # runtime, spec, expected thread args, expected *_NUM_THREADS env
    ("onnxruntime", {}, [], {}),  # default resources set no CPU limit: the server reads cpu.max
    ("onnxruntime", limit("2"), ["--intra-op-threads=2"], {}),
    ("onnxruntime", limit("1500m"), ["--intra-op-threads=2"], {}),
    (
        "onnxruntime",
        {**limit(8), "threads": {"intraOp": 3, "interOp": 2}},
        ["--intra-op-threads=3", "--inter-op-threads=2"],
        {},
    ),
    (
        "onnxruntime",
        {**limit(8), "sessionOptions": {"intraOpThreads": 4}},
        ["--intra-op-threads=4"],
        {},
    ),
    ("tfserving", {}, [], {}),
    (
        "tfserving",
        limit("500m"),
        ["--tensorflow_intra_op_parallelism=1", "--tensorflow_inter_op_parallelism=1"],
        {},
    ),
    (
        "tfserving",
        limit(6),
        ["--tensorflow_intra_op_parallelism=6", "--tensorflow_inter_op_parallelism=2"],
        {},
    ),
    (
        "tfserving",
        {**limit(6), "threads": {"intraOp": 4, "interOp": 1}},
        ["--tensorflow_intra_op_parallelism=4", "--tensorflow_inter_op_parallelism=1"],
        {},
    ),
    ("torchserve", {}, [], {}),
    ("torchserve", limit(4), [], {"OMP_NUM_THREADS": "4", "MKL_NUM_THREADS": "4"}),
    (
        "torchserve",
        {**limit(4), "threads": {"workers": 2}},
        [],
        {"OMP_NUM_THREADS": "2", "MKL_NUM_THREADS": "2"},
    ),
    (
        "torchserve",
        {"threads": {"intraOp": 2}},
        [],
        {"OMP_NUM_THREADS": "2", "MKL_NUM_THREADS": "2"},
    ),
    (  # spec.env wins over the derived value
        "torchserve",
        {**limit(4), "env": [{"name": "OMP_NUM_THREADS", "value": "1"}]},
        [],
        {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "4"},
    ),
]


@pytest.mark.parametrize(("runtime", "spec", "args", "env"), POD_TABLE)
def test_rendered_pod_threads(
    runtime: str, spec: dict[str, Any], args: list[str], env: dict[str, str]
) -> None:
    container, _ = rendered(md(runtime, **spec))
    assert thread_args(container) == args
    assert omp(container) == env


@pytest.mark.parametrize(
    ("spec", "workers"), [({}, 1), (limit(4), 1), ({**limit(4), "threads": {"workers": 3}}, 3)]
)
def test_torchserve_workers_in_config_properties(spec: dict[str, Any], workers: int) -> None:
    _, data = rendered(md("torchserve", **spec))
    props = dict(line.split("=", 1) for line in data["config.properties"].splitlines())
    assert props["default_workers_per_model"] == str(workers)
    assert f'"minWorkers": {workers}' in props["models"]
    assert f'"maxWorkers": {workers}' in props["models"]
