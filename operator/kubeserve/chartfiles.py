"""The chart's generated files (charts/kubeserve/files/), written by `make generate`.

The chart cannot run Python, so what the operator's code defines (the dashboard, the
prometheus-adapter rules) is written into the chart once; a test checks the copies are current.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

from .dashboard import dashboard_json
from .resources.autoscaling import adapter_rules
from .yamlio import dump

FILES: dict[str, Callable[[], str]] = {
    "grafana-dashboard.json": dashboard_json,
    "prometheus-adapter-rules.yaml": lambda: dump({"rules": adapter_rules()}),
}


def main(argv: list[str]) -> int:
    folder = Path(argv[0] if argv else "charts/kubeserve/files")
    folder.mkdir(parents=True, exist_ok=True)
    for name, render in FILES.items():
        (folder / name).write_text(render())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
