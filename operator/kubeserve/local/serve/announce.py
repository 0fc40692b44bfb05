"""The lines `kubeserve serve` prints on stdout once the model answers (scripts parse them)."""

from __future__ import annotations

import sys

from ...api import ModelDeployment
from .options import LocalOptions


def serving(md: ModelDeployment, url: str, *extra: str, opts: LocalOptions | None = None) -> None:
    if opts is not None and opts.on_serving is not None:
        opts.on_serving(url, extra)  # one backend of several: the caller announces them all
        return
    lines = [f"serving {md.model_name} ({md.spec.runtime.value}) at {url}"]
    lines += [f"  {line}" for line in extra]
    lines.append("press Ctrl-C to stop")
    print("\n".join(lines), flush=True)


def stopping(md: ModelDeployment, opts: LocalOptions | None = None) -> None:
    if opts is not None and opts.on_serving is not None:
        return  # the caller says it once for all its backends
    print(f"stopping {md.model_name} ...", file=sys.stderr, flush=True)
