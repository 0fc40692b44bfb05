"""The lines `kubeserve serve` prints on stdout once the model answers (scripts parse them)."""

from __future__ import annotations

import sys

from ...api import ModelDeployment


def serving(md: ModelDeployment, url: str, *extra: str) -> None:
    lines = [f"serving {md.model_name} ({md.spec.runtime.value}) at {url}"]
    lines += [f"  {line}" for line in extra]
    lines.append("press Ctrl-C to stop")
    print("\n".join(lines), flush=True)


def stopping(md: ModelDeployment) -> None:
    print(f"stopping {md.model_name} ...", file=sys.stderr, flush=True)
