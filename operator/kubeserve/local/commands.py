"""Registers `kubeserve serve` and `kubeserve package` on the CLI.

Only argparse and light modules are imported here: torch, tensorflow and onnxruntime load when
a command runs, so `kubeserve render` and the operator never pay for them.
"""

from __future__ import annotations

import argparse
import functools
import sys
from collections.abc import Callable
from typing import Any

from .errors import LocalError
from .serve.children import ChildFailed

Command = Callable[[argparse.Namespace], int]


def add_commands(sub: Any) -> None:
    from .package.command import add_parser as add_package
    from .serve.command import add_parser as add_serve

    for add, name in ((add_serve, "serve"), (add_package, "package")):
        add(sub)
        parser = sub.choices[name]
        parser.set_defaults(func=_guarded(name, parser.get_default("func")))


def _guarded(name: str, command: Command) -> Command:
    """Failures the user can fix -> one line on stderr and exit status 1; Ctrl-C -> 130."""

    @functools.wraps(command)
    def run(args: argparse.Namespace) -> int:
        try:
            return command(args)
        except LocalError as exc:
            if isinstance(exc, ChildFailed) and exc.log_tail:
                # What the server said last is usually the real cause; the error line stays last.
                for line in exc.log_tail:
                    print(f"  | {line}", file=sys.stderr)
            print(f"kubeserve {name}: error: {exc}", file=sys.stderr)
            return 1
        except KeyboardInterrupt:
            print(f"kubeserve {name}: interrupted", file=sys.stderr)
            return 130

    return run
