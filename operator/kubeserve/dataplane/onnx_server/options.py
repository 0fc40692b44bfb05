"""The server's settings, and the command line that fills them.

The flag names are a contract: the operator's onnxruntime runtime module writes them into the
container's args, and `kubeserve serve` passes the same settings in-process.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

MODEL_FILE = "model.onnx"
GRAPH_OPTIMIZATION_CHOICES = ("all", "extended", "basic", "disable")
DEVICE_CHOICES = ("cpu", "cuda")
# spec.sessionOptions.executionProvider, lower-cased. Strict, unlike --device's CUDA-or-CPU.
EXECUTION_PROVIDER_CHOICES = ("cpu", "cuda", "tensorrt")
DEFAULT_MAX_BODY_BYTES = 64 * 1024 * 1024


@dataclass(frozen=True)
class ServerOptions:
    model_dir: Path
    model_name: str
    host: str = "127.0.0.1"
    port: int = 8080  # 0 picks a free port (see OnnxServer.port)
    # The OIP v2 gRPC port: None is off, 0 picks a free port (OnnxServer.grpc_port). The
    # command line's --grpc-port 0 (its default) means off.
    grpc_port: int | None = None
    max_batch_size: int = 1  # rows along axis 0; 1 turns batching off
    max_batch_delay_ms: float = 0.0
    intra_op_threads: int = 0  # 0: ONNX Runtime's default
    inter_op_threads: int = 0
    graph_optimization_level: str = "all"
    device: str = "cpu"
    execution_provider: str | None = None  # None: by device; else exactly this (model.py)
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    warmup: bool = True
    intra_op_spinning: bool = False  # let ORT's idle threads busy-wait (see model.py)
    # Session calls faster than this run on the event loop's thread (batcher.Batcher): for a
    # 0.14 ms MLP it cut the added p50 at concurrency 1 by 0.3 ms and server CPU by 30 %
    # (docs/performance.md); slower models keep the inference thread.
    inline_max_ms: float = 1.0
    # How long SIGTERM waits for in-flight requests; a request that slips in as the last
    # connections close gets as long again (server.OnnxServer.stop). The pod's
    # terminationGracePeriodSeconds covers the preStop sleep plus twice this.
    shutdown_timeout_s: float = 10.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "model_dir", Path(self.model_dir))
        if not self.model_name or "/" in self.model_name:
            raise ValueError(f"model name {self.model_name!r} must be non-empty without '/'")
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port {self.port} is out of range")
        if self.grpc_port is not None and not 0 <= self.grpc_port <= 65535:
            raise ValueError(f"grpc_port {self.grpc_port} is out of range")
        if self.max_batch_size < 1:
            raise ValueError("max_batch_size must be at least 1")
        if self.max_batch_delay_ms < 0:
            raise ValueError("max_batch_delay_ms must not be negative")
        if self.intra_op_threads < 0 or self.inter_op_threads < 0:
            raise ValueError("thread counts must not be negative (0 means ONNX Runtime's default)")
        if self.graph_optimization_level not in GRAPH_OPTIMIZATION_CHOICES:
            raise ValueError(
                f"graph_optimization_level must be one of {', '.join(GRAPH_OPTIMIZATION_CHOICES)}"
            )
        if self.device not in DEVICE_CHOICES:
            raise ValueError(f"device must be one of {', '.join(DEVICE_CHOICES)}")
        if (
            self.execution_provider is not None
            and self.execution_provider not in EXECUTION_PROVIDER_CHOICES
        ):
            raise ValueError(
                f"execution_provider must be one of {', '.join(EXECUTION_PROVIDER_CHOICES)}"
            )
        if self.inline_max_ms < 0:
            raise ValueError("inline_max_ms must not be negative")
        if self.max_body_bytes < 1:
            raise ValueError("max_body_bytes must be positive")
        if self.shutdown_timeout_s < 0:
            raise ValueError("shutdown_timeout_s must not be negative")

    @property
    def model_path(self) -> Path:
        return self.model_dir / MODEL_FILE


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m kubeserve.dataplane.onnx_server",
        description="Serve DIR/model.onnx with ONNX Runtime over the Open Inference Protocol v2.",
    )
    parser.add_argument("--model-dir", required=True, type=Path, metavar="DIR")
    parser.add_argument("--model-name", required=True, metavar="NAME")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument(
        "--grpc-port",
        type=int,
        default=0,
        help="also serve the Open Inference Protocol v2 over gRPC on this port (0: off)",
    )
    parser.add_argument(
        "--max-batch-size",
        type=int,
        default=1,
        help="rows merged along axis 0 per session call (1: no batching)",
    )
    parser.add_argument(
        "--max-batch-delay-ms",
        type=float,
        default=0.0,
        help="how long a partial batch waits for more requests",
    )
    parser.add_argument("--intra-op-threads", type=int, default=0)
    parser.add_argument("--inter-op-threads", type=int, default=0)
    parser.add_argument(
        "--graph-optimization-level", choices=GRAPH_OPTIMIZATION_CHOICES, default="all"
    )
    parser.add_argument("--device", choices=DEVICE_CHOICES, default="cpu")
    parser.add_argument(
        "--execution-provider",
        choices=EXECUTION_PROVIDER_CHOICES,
        default=None,
        help="run on exactly this ONNX Runtime provider (falling back per node: tensorrt -> "
        "cuda -> cpu), or fail to start when this onnxruntime build lacks it "
        "(default: by --device, CUDA falling back to CPU with a warning)",
    )
    parser.add_argument("--max-body-bytes", type=int, default=DEFAULT_MAX_BODY_BYTES)
    parser.add_argument(
        "--no-warmup",
        dest="warmup",
        action="store_false",
        help="report ready without the warm-up inference",
    )
    parser.add_argument(
        "--intra-op-spinning",
        action="store_true",
        help="let ONNX Runtime's idle threads busy-wait (off: they share cores with HTTP)",
    )
    parser.add_argument(
        "--inline-max-ms",
        type=float,
        default=ServerOptions.inline_max_ms,
        help="session calls faster than this run on the event loop's thread, saving two "
        "thread hand-offs per call (0: always the inference thread)",
    )
    parser.add_argument(
        "--log-level", default="INFO", choices=("DEBUG", "INFO", "WARNING", "ERROR")
    )
    return parser


def parse_options(argv: Sequence[str] | None = None) -> tuple[ServerOptions, str]:
    """Options and the log level from a command line; exits with usage on bad flags."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        options = ServerOptions(
            model_dir=args.model_dir,
            model_name=args.model_name,
            host=args.host,
            port=args.port,
            grpc_port=args.grpc_port or None,
            max_batch_size=args.max_batch_size,
            max_batch_delay_ms=args.max_batch_delay_ms,
            intra_op_threads=args.intra_op_threads,
            inter_op_threads=args.inter_op_threads,
            graph_optimization_level=args.graph_optimization_level,
            device=args.device,
            execution_provider=args.execution_provider,
            max_body_bytes=args.max_body_bytes,
            warmup=args.warmup,
            intra_op_spinning=args.intra_op_spinning,
            inline_max_ms=args.inline_max_ms,
        )
    except ValueError as exc:
        parser.error(str(exc))
    return options, str(args.log_level)
