"""spec.model.uri -> a local model directory.

A local directory that already has the runtime's layout is served in place (relative paths
resolve against the YAML file's directory). Anything else (another local directory, a local
file such as an archive, s3://, gs://, https://) goes through the same storage initializer the
cluster runs in its init container, into a temp dir: local and cluster then agree on layouts,
archive handling and layout fixes (a lone foo.onnx becomes model.onnx), and the user's own
directory is never modified.
"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path
from urllib.parse import unquote, urlparse

from ...api import ModelDeployment, Runtime
from ..errors import LocalError
from .children import Child, run_to_completion

REMOTE_SCHEMES = ("s3", "gs", "https", "http")


def local_path(uri: str, base: Path) -> Path | None:
    """The local path a URI names (None for remote URIs), resolved against `base`."""
    if uri.startswith("file://"):
        parsed = urlparse(uri)
        # file://relative/dir is not a standard URI, but people write it: netloc+path.
        raw = (
            unquote(parsed.netloc + parsed.path)
            if parsed.netloc not in ("", "localhost")
            else unquote(parsed.path)
        )
        path = Path(raw)
    elif "://" in uri:
        return None
    else:
        path = Path(uri).expanduser()
    return path if path.is_absolute() else (base / path)


async def resolve(md: ModelDeployment, base: Path, work: Path, stop: asyncio.Event) -> Path:
    uri = md.spec.model.uri
    path = local_path(uri, base)
    if path is not None:
        if path.is_dir() and has_layout(md, path):
            return path.resolve()
        if not path.exists():
            raise LocalError(f"spec.model.uri: {path} does not exist")
        source = str(path.resolve())
    else:
        if md.spec.model.scheme == "pvc":
            raise LocalError(
                "spec.model.uri: pvc:// names a cluster volume; point it at a local path, "
                "file:// or an s3/gs/https URI to serve locally"
            )
        source = uri
    return await fetch(source, md, work / "model", stop)


def has_layout(md: ModelDeployment, path: Path) -> bool:
    """Whether `path` is what the runtime serves as it is (see dataplane/storage/layout.py)."""
    if md.spec.runtime == Runtime.ONNXRUNTIME:
        return (path / "model.onnx").is_file()
    if md.spec.runtime == Runtime.TORCHSERVE:
        return (path / f"{md.model_name}.mar").is_file()
    return any(
        child.name.isdigit() and (child / "saved_model.pb").is_file()
        for child in path.iterdir()
        if child.is_dir()
    )


async def fetch(source: str, md: ModelDeployment, dest: Path, stop: asyncio.Event) -> Path:
    command = [
        sys.executable,
        "-m",
        "kubeserve.dataplane.storage",
        source,
        str(dest),
        "--runtime",
        md.spec.runtime.value,
        "--model-name",
        md.model_name,
    ]
    child = Child(
        "storage initializer",
        command,
        env=dict(os.environ),
        log_path=dest.parent / "storage-initializer.log",
    )
    print(f"fetching {source} with the storage initializer ...", file=sys.stderr, flush=True)
    returncode = await run_to_completion(child, stop)
    if returncode is None:
        raise LocalError("stopped while fetching the model")
    if returncode != 0:
        detail = child.last_line().removeprefix("kubeserve-storage: error: ")
        raise LocalError(
            f"the storage initializer could not fetch {source}: "
            f"{detail or f'exit status {returncode}'}"
        )
    return dest
