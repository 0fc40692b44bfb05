"""docs/api.md lists every field of the CRD, as generated (run `make docs` after api changes)."""

from __future__ import annotations

from pathlib import Path

from kubeserve.apidoc import field_table

ROOT = Path(__file__).resolve().parents[2]


def test_api_reference_is_current() -> None:
    assert field_table() in (ROOT / "docs" / "api.md").read_text()


def test_reference_names_every_spec_field_with_a_description() -> None:
    table = field_table()
    for field in ("spec.gpu.migProfile", "spec.autoscaling.engine", "spec.model.credentialsSecret"):
        assert f"| `{field}` |" in table
    for line in table.splitlines():
        if line.startswith("| `spec"):
            assert not line.rstrip().endswith("|  |"), f"no description: {line}"
