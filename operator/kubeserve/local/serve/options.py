"""What `kubeserve serve` was asked for, shared by every runtime."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class LocalOptions:
    host: str
    port: int  # 0: pick a free port
    ready_timeout_s: float
    verbose: bool
    work_dir: Path  # a private temp dir, removed on exit
