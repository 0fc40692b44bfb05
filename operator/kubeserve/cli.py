"""The `kubeserve` command: run | render | crd | serve | package | version."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from . import __version__
from .api import InvalidSpec, ModelDeployment
from .config import OperatorConfig
from .yamlio import dump_all


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "func"):
        parser.print_help()
        return 2
    result: int = args.func(args)
    return result


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kubeserve", description=__doc__)
    sub = parser.add_subparsers(metavar="COMMAND")

    run = sub.add_parser("run", help="run the operator against the current cluster")
    scope = run.add_mutually_exclusive_group()
    scope.add_argument(
        "-A", "--all-namespaces", action="store_true", help="watch every namespace (default)"
    )
    scope.add_argument(
        "-n", "--namespace", action="append", default=[], help="watch NS (repeatable)"
    )
    run.add_argument(
        "--liveness", default="http://0.0.0.0:8080/healthz", help="kopf health endpoint URL"
    )
    run.add_argument(
        "--metrics-port", type=int, default=9090, help="Prometheus metrics port (0: off)"
    )
    run.add_argument(
        "--log-format",
        choices=["text", "json"],
        default=os.environ.get("KUBESERVE_LOG_FORMAT", "text"),
    )
    run.add_argument("--log-level", default=os.environ.get("KUBESERVE_LOG_LEVEL", "INFO"))
    run.add_argument(
        "--selector",
        default=os.environ.get("KUBESERVE_SELECTOR", ""),
        help="serve only ModelDeployments with these labels (a label selector; one shard)",
    )
    _leader_election_arguments(run)
    run.set_defaults(func=_run)

    render = sub.add_parser(
        "render", help="print the objects the operator would apply (no cluster)"
    )
    render.add_argument(
        "-f", "--filename", required=True, help="ModelDeployment YAML ('-' for stdin)"
    )
    render.set_defaults(func=_render)

    crd = sub.add_parser("crd", help="print the ModelDeployment CRD")
    crd.set_defaults(func=_crd)

    from .local.commands import add_commands

    add_commands(sub)

    version = sub.add_parser("version", help="print the version")
    version.set_defaults(func=lambda _args: print(__version__) or 0)
    return parser


def _leader_election_arguments(run: argparse.ArgumentParser) -> None:
    """kube-controller-manager's flags; the defaults are client-go's (15 s, 10 s, 2 s)."""
    env = os.environ.get
    group = run.add_argument_group("leader election (high availability)")
    group.add_argument(
        "--leader-elect",
        action=argparse.BooleanOptionalAction,
        default=env("KUBESERVE_LEADER_ELECT", "false").lower() in ("1", "true", "yes"),
        help="reconcile only while holding a Lease; standbys wait (off by default)",
    )
    group.add_argument(
        "--leader-election-id",
        default=env("KUBESERVE_LEADER_ELECTION_ID", "kubeserve"),
        help="the Lease's name: one per shard",
    )
    group.add_argument(
        "--leader-election-namespace",
        default=env("KUBESERVE_LEADER_ELECTION_NAMESPACE", ""),
        help="the Lease's namespace (default: $POD_NAMESPACE, the in-cluster one, 'default')",
    )
    group.add_argument("--leader-elect-lease-duration", type=int, default=15, metavar="SECONDS")
    group.add_argument("--leader-elect-renew-deadline", type=float, default=10.0, metavar="S")
    group.add_argument("--leader-elect-retry-period", type=float, default=2.0, metavar="S")


def _run(args: argparse.Namespace) -> int:
    from . import leadership
    from .operator_main import run_operator

    election = None
    if args.leader_elect:
        try:
            timing = leadership.Timing(
                args.leader_elect_lease_duration,
                args.leader_elect_renew_deadline,
                args.leader_elect_retry_period,
            )
        except ValueError as exc:
            print(f"kubeserve: {exc}", file=sys.stderr)
            return 2
        election = leadership.Config(
            namespace=args.leader_election_namespace or leadership.default_namespace(),
            name=args.leader_election_id,
            identity=leadership.default_identity(),
            timing=timing,
        )
    return run_operator(
        namespaces=args.namespace,
        liveness=args.liveness,
        metrics_port=args.metrics_port,
        log_format=args.log_format,
        log_level=args.log_level,
        leader_election=election,
        selector=args.selector,
    )


def _crd(_args: argparse.Namespace) -> int:
    from .crd import crd_yaml

    sys.stdout.write(crd_yaml())
    return 0


def load_documents(filename: str) -> list[Any]:
    text = sys.stdin.read() if filename == "-" else Path(filename).read_text()
    return [doc for doc in yaml.safe_load_all(text) if doc is not None]


def _render(args: argparse.Namespace) -> int:
    from .render import render

    cfg = OperatorConfig.from_env()
    out: list[dict[str, Any]] = []
    try:
        for doc in load_documents(args.filename):
            out.extend(render(ModelDeployment.parse(doc), cfg))
    except InvalidSpec as exc:
        print(f"kubeserve: invalid ModelDeployment: {exc}", file=sys.stderr)
        return 1
    except RecursionError:
        # PyYAML builds nested collections recursively: "[[[[...", thousands deep.
        print(f"kubeserve: cannot read {args.filename}: nested too deeply", file=sys.stderr)
        return 1
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        print(f"kubeserve: cannot read {args.filename}: {exc}".splitlines()[0], file=sys.stderr)
        return 1
    sys.stdout.write(dump_all(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
