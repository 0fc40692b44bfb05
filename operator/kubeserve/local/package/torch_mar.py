"""PyTorch -> DIR/<name>.mar for TorchServe: TorchScript + a handler, archived by
torch-model-archiver, then unpacked and run again (TorchScript and handler) to prove it works."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import types
import warnings
import zipfile
from pathlib import Path
from typing import Any

from ...runtimes.torchserve import MODEL_VERSION
from ..errors import LocalError, first_line
from .result import Packaged
from .torch_model import TorchModel, max_abs_diff, random_like, run_torch

TENSOR_HANDLER = Path(__file__).with_name("tensor_handler.py")
HANDLER_CONFIG = "kubeserve_handler.json"
ARCHIVER_TIMEOUT_S = 300


def package_mar(
    model: TorchModel,
    example: Any,
    out_dir: Path,
    *,
    name: str,
    handler: str | None,
    tolerance: float,
    force: bool,
    torchscript: str | None = None,
) -> Packaged:
    target = out_dir / f"{name}.mar"
    if target.exists() and not force:
        raise LocalError(f"{target} exists; pass --force to overwrite it")
    out_dir.mkdir(parents=True, exist_ok=True)
    checks: list[str] = []
    with tempfile.TemporaryDirectory(prefix="kubeserve-mar-") as tmp:
        work = Path(tmp)
        scripted, how = to_torchscript(model, example, torchscript)
        serialized = work / f"{name}.pt"
        scripted.save(str(serialized))
        config = work / HANDLER_CONFIG
        config.write_text(
            json.dumps({"input_dtype": _dtype_name(example), "row_shape": list(example.shape[1:])})
        )
        _archive(name, serialized, _handler(handler), config, out_dir, work)
    checks.insert(0, f"TorchScript by {how}")
    try:
        checks += verify(
            target,
            name=name,
            module=model.module,
            example=example,
            tolerance=tolerance,
            generic_handler=handler is None,
        )
    except LocalError:
        target.unlink(missing_ok=True)  # an archive that failed its check is not an artifact
        raise
    return Packaged(
        runtime="torchserve",
        files=(target,),
        model_uri=out_dir,
        model_name=name,
        checks=tuple(checks),
        details=(
            f'request: POST /predictions/{name} with {{"data": [[...]]}}, rows of shape '
            f"[N, {', '.join(map(str, example.shape[1:]))}] ({_dtype_name(example)})"
            if handler is None
            else f"handler: {handler}",
        ),
    )


def _dtype_name(tensor: Any) -> str:
    return str(tensor.dtype).removeprefix("torch.")


def to_torchscript(model: TorchModel, example: Any, how: str | None = None) -> tuple[Any, str]:
    """`how` None: script when possible (keeps control flow), else trace with the example.

    "script" or "trace" insists on that one and fails with its error. Either way the archive
    holds only TorchScript, so TorchServe never needs the model's Python class, and verify()
    compares it with the eager model on the example and on another batch size."""
    import torch

    if model.scripted:
        return model.module, "loading the TorchScript file"
    if how == "script":
        try:
            return torch.jit.script(model.module), "torch.jit.script"
        except Exception as exc:
            raise LocalError(
                f"torch.jit.script cannot compile the model (try --torchscript trace): "
                f"{first_line(exc)}"
            ) from exc
    if how == "trace":
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                traced = torch.jit.trace(model.module, (example,))  # type: ignore[no-untyped-call]
        except Exception as exc:
            raise LocalError(
                f"torch.jit.trace failed on the example input: {first_line(exc)}"
            ) from exc
        return traced, "torch.jit.trace with the example input"
    try:
        return torch.jit.script(model.module), "torch.jit.script"
    except Exception:
        pass  # Many real models are not scriptable; tracing them is the usual answer.
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            traced = torch.jit.trace(model.module, (example,))  # type: ignore[no-untyped-call]
            return traced, "torch.jit.trace"
    except Exception as exc:
        raise LocalError(
            f"cannot convert the model to TorchScript (script and trace failed): {first_line(exc)}"
        ) from exc


def _handler(handler: str | None) -> str:
    if handler is None:
        return str(TENSOR_HANDLER)
    if handler.endswith(".py") and not Path(handler).is_file():
        raise LocalError(f"--handler {handler}: no such file")
    # Anything else is one of TorchServe's builtin handlers (image_classifier, ...).
    return handler


def _archive(
    name: str, serialized: Path, handler: str, config: Path, out_dir: Path, work: Path
) -> None:
    command = [
        sys.executable,
        "-m",
        "model_archiver.model_packaging",
        "--model-name",
        name,
        "--version",
        MODEL_VERSION,
        "--serialized-file",
        str(serialized),
        "--handler",
        handler,
        "--extra-files",
        str(config),
        "--export-path",
        str(out_dir),
        "--force",
    ]
    # The archiver stages files in $TMPDIR/<model name>: a private TMPDIR keeps two packagers
    # of the same name from trampling on each other.
    env = {**os.environ, "TMPDIR": str(work)}
    try:
        done = subprocess.run(
            command,
            env=env,
            capture_output=True,
            text=True,
            timeout=ARCHIVER_TIMEOUT_S,
            check=False,
        )
    except FileNotFoundError:
        raise LocalError(
            "torch-model-archiver is not installed (pip install torch-model-archiver)"
        ) from None
    if done.returncode != 0:
        lines = [line for line in (done.stderr + done.stdout).splitlines() if line.strip()]
        detail = lines[-1] if lines else f"exit status {done.returncode}"
        if "No module named model_archiver" in done.stderr:
            detail = "torch-model-archiver is not installed (pip install torch-model-archiver)"
        raise LocalError(f"torch-model-archiver failed: {detail}")


def verify(
    path: Path, *, name: str, module: Any, example: Any, tolerance: float, generic_handler: bool
) -> list[str]:
    """Unzip the archive, check its manifest, load its TorchScript and run it (and our handler)."""
    checks = []
    with tempfile.TemporaryDirectory(prefix="kubeserve-mar-check-") as tmp:
        try:
            with zipfile.ZipFile(path) as archive:
                archive.extractall(tmp)
        except zipfile.BadZipFile as exc:
            raise LocalError(f"{path}: not a zip archive ({exc})") from exc
        manifest = json.loads((Path(tmp) / "MAR-INF" / "MANIFEST.json").read_text())
        model = manifest.get("model", {})
        if model.get("modelName") != name or model.get("modelVersion") != MODEL_VERSION:
            raise LocalError(
                f"{path}: manifest names {model.get('modelName')} "
                f"{model.get('modelVersion')}, expected {name} {MODEL_VERSION}"
            )
        serialized = Path(tmp) / model["serializedFile"]
        checks += _compare(module, _load(serialized), example, tolerance, f"{path.name}'s model")
        if generic_handler:
            checks.append(_run_handler(Path(tmp), manifest, module, example, tolerance))
    return checks


def _load(path: Path) -> Any:
    import torch

    try:
        loaded = torch.jit.load(str(path), map_location="cpu")  # type: ignore[no-untyped-call]
        return loaded.eval()
    except Exception as exc:
        raise LocalError(f"torch.jit.load cannot read {path.name}: {first_line(exc)}") from exc


def _compare(module: Any, loaded: Any, example: Any, tolerance: float, what: str) -> list[str]:
    checks = []
    for tensor in (example, random_like(example, batch=int(example.shape[0]) + 2)):
        diff = max_abs_diff(run_torch(loaded, tensor), run_torch(module, tensor))
        if diff > tolerance:
            raise LocalError(
                f"{what} differs from the model by {diff:.3g} (> --tolerance "
                f"{tolerance:g}) at batch size {tensor.shape[0]}"
            )
        checks.append(
            f"{what} matches the model at batch size {tensor.shape[0]} (max abs diff {diff:.2g})"
        )
    return checks


def _run_handler(
    model_dir: Path, manifest: dict[str, Any], module: Any, example: Any, tolerance: float
) -> str:
    """Call the archived handler the way TorchServe's worker does, with a JSON request."""
    import importlib.util

    import numpy as np

    handler_file = model_dir / manifest["model"]["handler"]
    spec = importlib.util.spec_from_file_location("_kubeserve_mar_handler", handler_file)
    if spec is None or spec.loader is None:
        raise LocalError(f"cannot import the archived handler {handler_file.name}")
    handler = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(handler)
    context = types.SimpleNamespace(
        system_properties={"model_dir": str(model_dir), "gpu_id": None},
        manifest=manifest,
        set_response_status=lambda *args, **kwargs: None,
    )
    body = json.dumps({"data": example.tolist()}).encode()
    responses = handler.handle([{"body": body}], context)
    if not isinstance(responses, list) or "data" not in responses[0]:
        raise LocalError(f"the archived handler answered {str(responses)[:200]}")
    actual = np.asarray(responses[0]["data"], dtype=np.float64)
    diff = max_abs_diff(actual, run_torch(module, example).astype(np.float64))
    if diff > tolerance:
        raise LocalError(f"the archived handler's answer differs by {diff:.3g}")
    return f'the archived handler answers {{"data": [...]}} requests (max abs diff {diff:.2g})'
