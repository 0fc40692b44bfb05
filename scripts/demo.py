"""`make demo`: kubeserve end to end on this machine, no cluster.

tiny PyTorch model -> `kubeserve package` (ONNX, checked against torch) -> a ModelDeployment
YAML -> `kubeserve render` (what the operator would create) -> `kubeserve serve` on a free port
on 127.0.0.1 -> one Open Inference Protocol v2 request -> compare with torch -> stop.

Exits non-zero on any failure. Usage: python scripts/demo.py [--keep DIR]
"""

from __future__ import annotations

import os

os.environ["ORT_DISABLE_TELEMETRY"] = "1"  # for this process and every command it runs

import argparse
import json
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
MODEL_FACTORY = REPO / "examples" / "demo" / "tiny_model.py"
NAME = "tiny"
EXAMPLE = [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]]
TOLERANCE = 1e-5
STEP_TIMEOUT_S = 180.0  # any one command; a healthy run needs a fraction of it
READY_TIMEOUT_S = 60.0
POLL_S = 0.1


class DemoFailed(Exception):
    pass


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", type=Path, help="work in DIR and keep it (default: a temp dir)")
    args = parser.parse_args()
    started = time.monotonic()
    try:
        if args.keep:
            args.keep.mkdir(parents=True, exist_ok=True)
            run(args.keep.resolve())
        else:
            with tempfile.TemporaryDirectory(prefix="kubeserve-demo-") as tmp:
                run(Path(tmp))
    except DemoFailed as exc:
        print(f"\ndemo FAILED: {exc}", file=sys.stderr)
        return 1
    print(f"\ndemo OK in {time.monotonic() - started:.1f} s")
    return 0


def run(work: Path) -> None:
    model_dir = work / "models" / NAME
    step(1, f"package {MODEL_FACTORY.relative_to(REPO)}:build as ONNX (checked against torch)")
    out = kubeserve(
        "package",
        f"{MODEL_FACTORY}:build",
        "--input-shape",
        "1,4",
        "--format",
        "onnx",
        "-o",
        str(model_dir),
        "--tolerance",
        str(TOLERANCE),
    )
    print(indent(out))

    step(2, "write its ModelDeployment")
    md_path = work / f"{NAME}.yaml"
    md = model_deployment(f"models/{NAME}")  # relative to the YAML file
    md_path.write_text(yaml.safe_dump(md, sort_keys=False))
    print(indent(md_path.read_text()))

    step(3, "kubeserve render: what the operator would apply in a cluster")
    # In a cluster the model comes from object storage or a volume, never from a path on this
    # machine, so render validates the cluster form: the same spec with the model on a PVC.
    cluster_path = work / f"{NAME}-cluster.yaml"
    cluster_path.write_text(
        yaml.safe_dump(model_deployment(f"pvc://models/{NAME}"), sort_keys=False)
    )
    rendered = [
        doc for doc in yaml.safe_load_all(kubeserve("render", "-f", str(cluster_path))) if doc
    ]
    for obj in rendered:
        print(f"    {obj['kind']:<24} {obj['metadata']['name']}")
    if not any(obj["kind"] == "Deployment" for obj in rendered):
        raise DemoFailed("render produced no Deployment")

    port = free_port()
    step(4, f"kubeserve serve -f {md_path.name} on 127.0.0.1:{port}")
    log = work / "serve.log"
    with open(log, "w") as stderr:
        server = subprocess.Popen(
            [sys.executable, "-m", "kubeserve", "serve", "-f", str(md_path), "--port", str(port)],
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            cwd=work,
        )
    try:
        base = f"http://127.0.0.1:{port}"
        waited = wait_ready(server, f"{base}/v2/health/ready", log)
        print(f"    ready after {waited:.1f} s: {base}/v2/models/{NAME}")

        step(5, "send a v2 inference request and compare with torch")
        request = {
            "inputs": [
                {
                    "name": "input",
                    "shape": [len(EXAMPLE), 4],
                    "datatype": "FP32",
                    "data": [value for row in EXAMPLE for value in row],
                }
            ]
        }
        print(f"    POST {base}/v2/models/{NAME}/infer")
        print(f"    {json.dumps(request)}")
        body = post(f"{base}/v2/models/{NAME}/infer", request)
        served = rows(body["outputs"][0])
        expected = torch_answer(EXAMPLE)
        diff = max(
            abs(a - b)
            for ra, rb in zip(served, expected, strict=True)
            for a, b in zip(ra, rb, strict=True)
        )
        for features, logits in zip(EXAMPLE, served, strict=True):
            best = max(range(len(logits)), key=logits.__getitem__)
            print(
                f"    {features} -> class {best}  logits [{', '.join(f'{v:.5f}' for v in logits)}]"
            )
        print(f"    max abs diff vs torch: {diff:.2e} (tolerance {TOLERANCE:g})")
        if diff > TOLERANCE:
            raise DemoFailed(f"the served prediction differs from torch by {diff:.3g}")
    finally:
        step(6, "stop the server (SIGTERM)")
        status = stop(server)
        print(f"    kubeserve serve exited with {status}")
    if status != 0:
        raise DemoFailed(f"kubeserve serve exited with {status}:\n{tail(log)}")


def model_deployment(uri: str) -> dict[str, Any]:
    return {
        "apiVersion": "kubeserve.io/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": NAME},
        "spec": {
            "runtime": "onnxruntime",
            "model": {"uri": uri},
            "resources": {"requests": {"cpu": "500m", "memory": "256Mi"}},
            "batching": {"maxBatchSize": 8, "maxDelayMs": 2},
        },
    }


def kubeserve(*args: str) -> str:
    try:
        done = subprocess.run(
            [sys.executable, "-m", "kubeserve", *args],
            capture_output=True,
            text=True,
            timeout=STEP_TIMEOUT_S,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise DemoFailed(f"kubeserve {args[0]} took more than {STEP_TIMEOUT_S:.0f} s") from None
    if done.returncode != 0:
        raise DemoFailed(
            f"kubeserve {args[0]} exited with {done.returncode}: {done.stderr.strip()[-2000:]}"
        )
    return done.stdout


def wait_ready(server: subprocess.Popen[bytes], url: str, log: Path) -> float:
    """Bounded poll of the readiness endpoint; fails fast if the server exits."""
    started = time.monotonic()
    while time.monotonic() - started < READY_TIMEOUT_S:
        if server.poll() is not None:
            raise DemoFailed(f"kubeserve serve exited with {server.returncode}:\n{tail(log)}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return time.monotonic() - started
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(POLL_S)
    raise DemoFailed(f"not ready after {READY_TIMEOUT_S:.0f} s:\n{tail(log)}")


def post(url: str, body: Any) -> Any:
    request = urllib.request.Request(
        url,
        data=json.dumps(body).encode(),
        method="POST",
        headers={"Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as exc:
        raise DemoFailed(f"POST {url}: HTTP {exc.code}: {exc.read()[:500]!r}") from None
    except (urllib.error.URLError, OSError) as exc:
        raise DemoFailed(f"POST {url}: {exc}") from None


def rows(output: dict[str, Any]) -> list[list[float]]:
    width = output["shape"][1]
    data = output["data"]
    return [data[i : i + width] for i in range(0, len(data), width)]


def torch_answer(inputs: list[list[float]]) -> list[list[float]]:
    import importlib.util

    import torch

    spec = importlib.util.spec_from_file_location("tiny_model", MODEL_FACTORY)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    with torch.no_grad():
        answer: list[list[float]] = module.build()(torch.tensor(inputs)).tolist()
    return answer


def stop(server: subprocess.Popen[bytes]) -> int:
    if server.poll() is None:
        server.send_signal(signal.SIGTERM)
    try:
        return server.wait(timeout=60)
    except subprocess.TimeoutExpired:
        server.kill()
        server.wait(timeout=30)
        raise DemoFailed("kubeserve serve did not stop within 60 s after SIGTERM") from None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def step(number: int, title: str) -> None:
    print(f"\n[{number}/6] {title}", flush=True)


def indent(text: str) -> str:
    return "\n".join(f"    {line}" for line in text.rstrip().splitlines())


def tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


if __name__ == "__main__":
    sys.exit(main())
