"""The model cache: keys, atomic fills (two real processes), LRU eviction, the pod spec it
needs, the API field in both validation layers, and the termination report's contract.

The fsspec side (content versions from a real S3) is in tests/runtimes/test_storage.py.
"""

from __future__ import annotations

import fcntl
import json
import multiprocessing
import os
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from crd_validator import crd_errors

from kubeserve.api import InvalidSpec, ModelDeployment
from kubeserve.config import ENV_VARS, OperatorConfig
from kubeserve.dataplane.storage import cache, report
from kubeserve.render import render
from kubeserve.resources.storage import CACHE_DIR, ModelCacheSettings, cache_for

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # tests.policy is importable from the repository root
    sys.path.insert(0, str(ROOT))
from tests.policy.pss import object_violations  # noqa: E402

MiB = 1 << 20


# --- keys ----------------------------------------------------------------------------------


def test_key_depends_on_uri_and_content_version_only() -> None:
    base = cache.key("s3://bucket/m", "etag-1")
    assert base == cache.key("s3://bucket/m", "etag-1")
    assert base != cache.key("s3://bucket/m", "etag-2")  # changed object, same URI: a miss
    assert base != cache.key("s3://bucket/other", "etag-1")
    # A presigned URL's query changes with each signature; the object is the same.
    url = "https://host.example/m.onnx"
    assert cache.key(f"{url}?REDACTED", "e") == cache.key(url, "e")
    assert len(base) == 32 and base.isalnum()


@pytest.mark.parametrize(
    ("text", "size"),
    [("20Gi", 20 << 30), ("500M", 500_000_000), ("1", 1), ("1.5Ki", 1536), ("2k", 2000)],
)
def test_parse_size(text: str, size: int) -> None:
    assert cache.parse_size(text) == size


@pytest.mark.parametrize("text", ["", "Gi", "5m", "-1Gi", "20 GB", "1e3"])
def test_parse_size_refuses(text: str) -> None:
    with pytest.raises(ValueError):
        cache.parse_size(text)


# --- fill, hit, eviction ------------------------------------------------------------------


def writer(size: int, calls: list[int] | None = None, name: str = "model.onnx") -> Any:
    def fill(target: Path) -> int:
        if calls is not None:
            calls.append(1)
        (target / name).write_bytes(b"m" * size)
        return size

    return fill


def entries(root: Path) -> list[str]:
    return sorted(p.name for p in (root / cache.FORMAT / "entries").iterdir())


def test_miss_fills_then_hit_serves_without_filling(tmp_path: Path) -> None:
    store = cache.Cache(tmp_path, 10 * MiB)
    calls: list[int] = []
    with store.entry("k1", writer(MiB, calls), {"uri": "s3://b/m"}) as first:
        assert (first.hit, first.cached, first.bytes) == (False, True, MiB)
        assert (first.path / "model.onnx").stat().st_size == MiB
    with store.entry("k1", writer(MiB, calls), {"uri": "s3://b/m"}) as second:
        assert (second.hit, second.bytes) == (True, MiB)
        assert (second.path / "model.onnx").stat().st_size == MiB
    assert calls == [1]
    assert entries(tmp_path) == ["k1"]
    # Nothing left in staging.
    assert list((tmp_path / cache.FORMAT / "staging").iterdir()) == []


def test_failed_fill_leaves_no_entry_and_the_next_fill_works(tmp_path: Path) -> None:
    store = cache.Cache(tmp_path, 10 * MiB)

    def broken(target: Path) -> int:
        (target / "model.onnx").write_bytes(b"half")
        raise RuntimeError("connection reset")

    with pytest.raises(RuntimeError), store.entry("k", broken, {}):
        pass
    assert entries(tmp_path) == []
    assert list((tmp_path / cache.FORMAT / "staging").iterdir()) == []
    with store.entry("k", writer(10), {}) as entry:
        assert not entry.hit and entry.cached


def test_crashed_fill_leftovers_are_swept(tmp_path: Path) -> None:
    store = cache.Cache(tmp_path, 10 * MiB)
    with store.entry("k", writer(10), {}):
        pass
    # A fill killed mid-download leaves its staging dir (no lock holder any more).
    stale = tmp_path / cache.FORMAT / "staging" / "dead.abc123"
    (stale / "data").mkdir(parents=True)
    with store.entry("other", writer(10), {}):
        pass
    assert not stale.exists()


def test_too_big_is_served_once_and_not_cached(tmp_path: Path) -> None:
    store = cache.Cache(tmp_path, MiB)
    with store.entry("big", writer(2 * MiB), {}) as entry:
        assert (entry.cached, entry.hit) == (False, False)
        assert (entry.path / "model.onnx").stat().st_size == 2 * MiB  # usable meanwhile
    assert entries(tmp_path) == []


def age(root: Path, name: str, seconds_ago: float) -> None:
    when = time.time() - seconds_ago
    os.utime(root / cache.FORMAT / "entries" / name / cache.ENTRY_FILE, (when, when))


def test_least_recently_used_is_evicted_first(tmp_path: Path) -> None:
    store = cache.Cache(tmp_path, 3 * MiB)
    for name in ("a", "b", "c"):
        with store.entry(name, writer(MiB), {}):
            pass
    age(tmp_path, "a", 300)
    age(tmp_path, "b", 200)
    age(tmp_path, "c", 100)
    with store.entry("a", writer(MiB), {}) as hit:  # a hit makes "a" the most recent
        assert hit.hit
    with store.entry("d", writer(MiB), {}):
        pass
    assert entries(tmp_path) == ["a", "c", "d"]  # "b" was the least recently used
    with store.entry("e", writer(2 * MiB), {}):
        pass
    assert entries(tmp_path) == ["d", "e"]


def test_an_entry_in_use_is_not_evicted(tmp_path: Path) -> None:
    store = cache.Cache(tmp_path, 2 * MiB)
    with store.entry("old", writer(MiB), {}):
        pass
    age(tmp_path, "old", 300)
    # Another pod is copying "old" out right now: it holds the shared lock.
    with (tmp_path / cache.FORMAT / "locks" / "old.lock").open("a") as held:
        fcntl.flock(held.fileno(), fcntl.LOCK_SH)
        with store.entry("new", writer(2 * MiB), {}) as entry:
            assert entry.cached
    assert entries(tmp_path) == ["new", "old"]  # over the bound for now, never broken
    with store.entry("newer", writer(MiB), {}):
        pass
    assert "old" not in entries(tmp_path)


def test_lock_wait_is_bounded_and_says_so(tmp_path: Path) -> None:
    store = cache.Cache(tmp_path, MiB, lock_wait_s=0.5)
    (tmp_path / cache.FORMAT / "locks").mkdir(parents=True)
    with (tmp_path / cache.FORMAT / "locks" / "k.lock").open("a") as held:
        fcntl.flock(held.fileno(), fcntl.LOCK_EX)  # a fill that never ends
        started = time.monotonic()
        with (
            pytest.raises(cache.CacheUnavailable, match="stayed locked"),
            store.entry("k", writer(1), {}),
        ):
            pass
        assert time.monotonic() - started < 5


def test_unusable_cache_is_unavailable_not_fatal(tmp_path: Path) -> None:
    # A file where the volume should be (permissions would not stop root, which tests may be).
    (tmp_path / "not-a-volume").write_text("")
    with (
        pytest.raises(cache.CacheUnavailable),
        cache.Cache(tmp_path / "not-a-volume", MiB).entry("k", writer(1), {}),
    ):
        pass


# --- two processes filling one entry at once ----------------------------------------------


def _slow_fill_process(root: str, log: str, start: Any) -> None:
    start.wait(10)

    def fill(target: Path) -> int:
        with open(log, "a") as out:
            out.write(f"fill {os.getpid()}\n")
        # Slow enough that the other process surely arrives while this one fills.
        for i in range(20):
            (target / f"part-{i}").write_bytes(os.urandom(4096))
            time.sleep(0.05)
        return 20 * 4096

    with cache.Cache(Path(root), 10 * MiB, lock_wait_s=30).entry("shared", fill, {}) as entry:
        files = sorted(p.name for p in entry.path.iterdir())
        digest = [(p, (entry.path / p).read_bytes()[:16].hex()) for p in files]
        with open(log, "a") as out:
            out.write(json.dumps({"hit": entry.hit, "files": digest}) + "\n")


def test_two_processes_fill_once_and_see_the_same_entry(tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("spawn")
    start = ctx.Event()
    log = tmp_path / "log"
    procs = [
        ctx.Process(target=_slow_fill_process, args=(str(tmp_path / "c"), str(log), start))
        for _ in range(2)
    ]
    for proc in procs:
        proc.start()
    start.set()
    for proc in procs:
        proc.join(timeout=60)
        assert proc.exitcode == 0
    lines = log.read_text().splitlines()
    assert len([line for line in lines if line.startswith("fill ")]) == 1, lines
    results = [json.loads(line) for line in lines if line.startswith("{")]
    assert sorted(r["hit"] for r in results) == [False, True]
    assert results[0]["files"] == results[1]["files"]
    assert len(results[0]["files"]) == 20
    assert entries(tmp_path / "c") == ["shared"]


# --- the pod spec --------------------------------------------------------------------------


def md(model: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "kubeserve.io/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": "mnist", "namespace": "ml", "uid": "u-1"},
        "spec": {"runtime": "onnxruntime", "model": model},
    }


CLUSTER = OperatorConfig.from_env({"KUBESERVE_MODEL_CACHE_CLAIM": "models-cache"})
S3 = {"uri": "s3://bucket/mnist"}


def pod(model: dict[str, Any], cfg: OperatorConfig) -> dict[str, Any]:
    objs = render(ModelDeployment.parse(md(model)), cfg)
    (deployment,) = [o for o in objs if o["kind"] == "Deployment"]
    spec: dict[str, Any] = deployment["spec"]["template"]["spec"]
    return spec


@pytest.mark.parametrize(
    ("model", "cfg", "claim", "size"),
    [
        (S3, OperatorConfig(), None, None),  # off by default
        (S3, CLUSTER, "models-cache", "50Gi"),  # the operator's default
        ({**S3, "cache": {"enabled": False}}, CLUSTER, None, None),  # opted out
        ({**S3, "cache": {"claimName": "mine", "maxSize": "5Gi"}}, OperatorConfig(), "mine", "5Gi"),
        ({**S3, "cache": {"maxSize": 1000000}}, CLUSTER, "models-cache", "1000000"),
        ({"uri": "pvc://models/mnist"}, CLUSTER, None, None),  # nothing is downloaded
    ],
)
def test_pod_spec_with_and_without_the_cache(
    model: dict[str, Any], cfg: OperatorConfig, claim: str | None, size: str | None
) -> None:
    spec = pod(model, cfg)
    caches = [v for v in spec["volumes"] if v["name"] == "model-cache"]
    server = spec["containers"][0]
    # The server never sees the cache, and reads its model read-only either way.
    assert not any(m["name"] == "model-cache" for m in server["volumeMounts"])
    assert all(m["readOnly"] for m in server["volumeMounts"] if m["mountPath"] == "/mnt/models")
    if claim is None:
        assert caches == []
        for init in spec.get("initContainers", []):
            assert not any(a.startswith("--cache") for a in init["args"])
        return
    assert caches == [{"name": "model-cache", "persistentVolumeClaim": {"claimName": claim}}]
    (init,) = spec["initContainers"]
    assert {"name": "model-cache", "mountPath": CACHE_DIR} in init["volumeMounts"]
    assert init["args"][-2:] == [f"--cache-dir={CACHE_DIR}", f"--cache-max-size={size}"]
    # The model volume the initializer fills is still the pod's own emptyDir.
    assert {"name": "model", "emptyDir": {}} in spec["volumes"]


def test_cache_on_pods_stay_restricted() -> None:
    objs = render(ModelDeployment.parse(md({**S3, "credentialsSecret": "s3"})), CLUSTER)
    (deployment,) = [o for o in objs if o["kind"] == "Deployment"]
    volumes = deployment["spec"]["template"]["spec"]["volumes"]
    assert any(v["name"] == "model-cache" for v in volumes)
    assert object_violations(deployment) == []


def test_cache_without_any_claim_is_an_invalid_spec() -> None:
    parsed = ModelDeployment.parse(md({**S3, "cache": {"maxSize": "5Gi"}}))
    with pytest.raises(InvalidSpec) as caught:
        cache_for(parsed, ModelCacheSettings())
    assert caught.value.field == "spec.model.cache.claimName"
    assert "cluster-wide" in caught.value.message


# --- the API in both layers ----------------------------------------------------------------


@pytest.mark.parametrize(
    "model",
    [
        {**S3, "cache": {}},
        {**S3, "cache": {"enabled": False}},
        {**S3, "cache": {"claimName": "c", "maxSize": "20Gi"}},
        {"uri": "https://host.example/m.onnx", "cache": {"maxSize": 1073741824}},
    ],
)
def test_valid_cache_specs_pass_both_layers(model: dict[str, Any]) -> None:
    assert crd_errors(md(model)) == []
    ModelDeployment.parse(md(model))


@pytest.mark.parametrize(
    ("model", "field"),
    [
        ({"uri": "pvc://models/m", "cache": {}}, "spec.model"),
        ({"uri": "pvc://models/m", "cache": {"enabled": False}}, "spec.model"),
        ({**S3, "cache": {"maxSize": "0"}}, "spec.model.cache.maxSize"),
        ({**S3, "cache": {"maxSize": 0}}, "spec.model.cache.maxSize"),
        ({**S3, "cache": {"maxSize": "500m"}}, "spec.model.cache.maxSize"),
        ({**S3, "cache": {"claimName": "Not_A_Claim"}}, "spec.model.cache.claimName"),
    ],
)
def test_invalid_cache_specs_fail_both_layers(model: dict[str, Any], field: str) -> None:
    assert crd_errors(md(model)) != []
    with pytest.raises(InvalidSpec) as caught:
        ModelDeployment.parse(md(model))
    assert caught.value.field == field


def test_unknown_cache_field_is_named_by_the_operator() -> None:
    # The API server prunes it (kubectl's strict validation refuses it); the operator names it.
    with pytest.raises(InvalidSpec) as caught:
        ModelDeployment.parse(md({**S3, "cache": {"size": "1Gi"}}))
    assert caught.value.field == "spec.model.cache.size"


def test_operator_setting_defaults_and_validation() -> None:
    assert ENV_VARS["KUBESERVE_MODEL_CACHE_CLAIM"] == ""
    assert OperatorConfig.from_env({}).model_cache_claim == ""
    cfg = OperatorConfig.from_env(
        {"KUBESERVE_MODEL_CACHE_CLAIM": "c", "KUBESERVE_MODEL_CACHE_MAX_SIZE": "7Gi"}
    )
    assert (cfg.model_cache_claim, cfg.model_cache_max_size) == ("c", "7Gi")
    with pytest.raises(ValueError, match="CLAIM"):
        OperatorConfig.from_env({"KUBESERVE_MODEL_CACHE_CLAIM": "Bad Name"})
    with pytest.raises(ValueError, match="MAX_SIZE"):
        OperatorConfig.from_env({"KUBESERVE_MODEL_CACHE_MAX_SIZE": "lots"})


# --- the termination report ----------------------------------------------------------------


def test_report_round_trip_and_shape() -> None:
    text = report.format_report(1.23456, 5 * MiB, report.CACHE_MISS)
    assert "\n" not in text and len(text.encode()) < report.MAX_BYTES
    assert json.loads(text) == {"downloadSeconds": 1.235, "bytes": 5 * MiB, "cache": "miss"}
    assert report.parse_report(text) == {
        report.DOWNLOAD_SECONDS: 1.235,
        report.BYTES: 5 * MiB,
        report.CACHE: "miss",
    }
    with pytest.raises(ValueError):
        report.format_report(1.0, 1, "warm")


@pytest.mark.parametrize(
    "text",
    [
        None,
        "",
        "kubeserve-storage: error: not found: s3://bucket/m",
        "[1, 2]",
        '{"downloadSeconds": 1.0, "bytes": 3}',
        '{"downloadSeconds": -1, "bytes": 3, "cache": "hit"}',
        '{"downloadSeconds": "1", "bytes": 3, "cache": "hit"}',
        '{"downloadSeconds": 1, "bytes": true, "cache": "hit"}',
        '{"downloadSeconds": 1, "bytes": 3.5, "cache": "hit"}',
        '{"downloadSeconds": NaN, "bytes": 3, "cache": "hit"}',
        '{"downloadSeconds": 1, "bytes": 3, "cache": "warm"}',
        '{"downloadSeconds": 1, "bytes": 3, "cache": "hit"' + " " * 5000 + "}",
        '{"downloadSeconds": 1, "bytes": 3, "cache": "hit"',  # truncated
    ],
)
def test_parse_report_tolerates_garbage(text: Any) -> None:
    assert report.parse_report(text) is None


def test_parse_report_ignores_unknown_keys_and_whitespace() -> None:
    text = ' {"downloadSeconds": 0, "bytes": 0, "cache": "present", "future": 1}\n'
    assert report.parse_report(text) == {"downloadSeconds": 0.0, "bytes": 0, "cache": "present"}


def test_write_report_only_where_a_message_file_can_be(tmp_path: Path) -> None:
    target = tmp_path / "termination-log"
    assert report.write_report("{}", {report.PATH_ENV: str(target)})
    assert target.read_text() == "{}"
    missing = tmp_path / "no-such-dir" / "termination-log"
    assert not report.write_report("{}", {report.PATH_ENV: str(missing)})
    assert not missing.parent.exists()
    with pytest.raises(ValueError):
        report.write_report("x" * 5000, {report.PATH_ENV: str(target)})


def test_the_report_module_needs_no_third_party_package() -> None:
    source = Path(report.__file__).read_text()
    imports = {
        line.split()[1].split(".")[0]
        for line in source.splitlines()
        if line.startswith(("import ", "from "))
    }
    assert imports <= {"__future__", "json", "math", "os", "collections", "pathlib", "typing"}
