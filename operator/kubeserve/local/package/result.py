"""What a packager reports back: the files it wrote and how to serve them."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class Packaged:
    runtime: str  # the ModelDeployment spec.runtime that serves the artifact
    files: tuple[Path, ...]  # what was written
    model_uri: Path  # what spec.model.uri should point at
    model_name: str | None  # spec.model.name the artifact needs (None: any name works)
    checks: tuple[str, ...] = field(default_factory=tuple)  # what the load-back verified
    details: tuple[str, ...] = field(default_factory=tuple)  # what clients need to know

    def report(self) -> str:
        lines = [f"wrote {path}" for path in self.files]
        lines += list(self.details)
        lines += [f"checked: {check}" for check in self.checks]
        lines.append(f"serve it with runtime: {self.runtime}")
        lines.append("  spec:")
        lines.append(f"    runtime: {self.runtime}")
        lines.append("    model:")
        lines.append(f"      uri: {self.model_uri.resolve().as_uri()}")
        if self.model_name:
            lines.append(f"      name: {self.model_name}")
        return "\n".join(lines)
