"""What `kubeserve serve` was asked for, shared by every runtime."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

# Called instead of printing the "serving" lines: (url, extra lines). `kubeserve serve` with a
# canary runs two runtimes behind one front and announces them together (canary.py).
OnServing = Callable[[str, tuple[str, ...]], None]


@dataclass(frozen=True)
class LocalOptions:
    host: str
    port: int  # 0: pick a free port
    ready_timeout_s: float
    verbose: bool
    work_dir: Path  # a private temp dir, removed on exit
    on_serving: OnServing | None = None  # None: print the "serving" lines (announce.py)
