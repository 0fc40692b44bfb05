"""`kubeserve package MODEL --format onnx|mar|savedmodel -o DIR`: flags and dispatch."""

from __future__ import annotations

import argparse
import os
import re
import sys
from pathlib import Path

from ...api import MODEL_NAME_PATTERN
from ..errors import LocalError
from .result import Packaged

FORMATS = ("onnx", "mar", "savedmodel")
DEFAULT_TOLERANCE = 1e-4
DEFAULT_OPSET = 18  # torch_onnx.DEFAULT_OPSET, repeated so --help does not import torch
QUANTIZE_MODES = ("dynamic", "static")  # quantize.MODES (that module imports numpy)
TORCHSCRIPT_MODES = ("trace", "script")
# Exit statuses: 0 written; 1 an error the user can fix (nothing written); 2 bad flags
# (argparse); 3 the quantized model breaks --max-abs-diff / --min-top1-agreement (nothing
# written; the report is printed).
EXIT_REJECTED = 3

USAGE_EXAMPLES = """\
examples:
  kubeserve package mypkg.models:build --input-shape 1,3,224,224 --format onnx -o out/resnet
  kubeserve package model.torchscript.pt --input-shape 1,4 --format mar --name iris -o out
  kubeserve package model.keras --format savedmodel --name iris -o out
  kubeserve package mypkg.models:build --input-shape 1,64 --format onnx \\
      --quantize static --calibration rows.npy -o out/mlp-int8
  kubeserve package mypkg.models:build --input-shape 1,4 --format mar \\
      --torchscript trace --name iris -o out

exit status: 0 written; 1 error (nothing written); 2 bad flags; 3 the quantized model
breaks --max-abs-diff or --min-top1-agreement (report printed, nothing written)
"""


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "package",
        help="turn a trained model into a runtime's artifact and check it by loading it back",
        description="Turn a trained PyTorch or Keras model into the artifact a runtime serves "
        "(ONNX for onnxruntime, .mar for torchserve, a SavedModel for tfserving), load it back "
        "to check it, and print the ModelDeployment runtime and model URI to use.",
        epilog=USAGE_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "model",
        help="a TorchScript file (.pt), a Keras file (.keras), or module:factory / "
        "path/to/file.py:factory returning a torch.nn.Module or keras.Model",
    )
    parser.add_argument(
        "--format",
        required=True,
        choices=FORMATS,
        help="onnx: DIR/model.onnx; mar: DIR/NAME.mar; savedmodel: DIR/NAME/VERSION/saved_model.pb",
    )
    parser.add_argument(
        "-o",
        "--output",
        required=True,
        type=Path,
        metavar="DIR",
        help="directory to write into (created if missing)",
    )
    parser.add_argument("--name", help="model name (mar, savedmodel); default: DIR's name")
    example = parser.add_argument_group(
        "example input (PyTorch: required; Keras: optional, for the check and the TF Serving "
        "warm-up request)"
    )
    example.add_argument(
        "--input-shape",
        metavar="N,D,...",
        help="shape of an example input, batch dimension first, e.g. 1,4",
    )
    example.add_argument("--input-dtype", default="float32", help="dtype (default float32)")
    example.add_argument(
        "--example-input",
        metavar="FILE.pt",
        help="a tensor saved with torch.save, instead of --input-shape",
    )
    parser.add_argument(
        "--opset", type=int, default=DEFAULT_OPSET, help=f"ONNX opset (default {DEFAULT_OPSET})"
    )
    parser.add_argument(
        "--handler",
        help="mar: a TorchServe builtin handler name or a .py file "
        '(default: kubeserve\'s tensor handler, JSON {"data": [[...]]})',
    )
    parser.add_argument(
        "--model-version",
        type=int,
        default=1,
        help="savedmodel: the numeric version directory (default 1)",
    )
    parser.add_argument(
        "--tolerance",
        type=float,
        default=DEFAULT_TOLERANCE,
        help="largest max-abs difference the load-back check accepts "
        f"(default {DEFAULT_TOLERANCE:g})",
    )
    parser.add_argument(
        "--force",
        action="store_true",
        help="overwrite an existing artifact; with --quantize, also write a quantized model "
        "that breaks its tolerances",
    )
    parser.add_argument(
        "--torchscript",
        choices=TORCHSCRIPT_MODES,
        help="mar: torch.jit.trace with the example input, or torch.jit.script "
        "(default: script, falling back to trace); the .mar holds only TorchScript",
    )
    quant = parser.add_argument_group(
        "quantization (onnx only): ONNX Runtime int8, compared with the float model"
    )
    quant.add_argument(
        "--quantize",
        choices=QUANTIZE_MODES,
        help="dynamic: int8 weights, activations quantized per call (no calibration needed); "
        "static: int8 weights and activations (QDQ), ranges from --calibration",
    )
    quant.add_argument(
        "--calibration",
        type=Path,
        metavar="FILE",
        help="a .npy (or one-array .npz) of example inputs, rows first: calibrates static "
        "quantization and is what both models are compared on. Without it: random rows "
        "(a warning: they calibrate poorly)",
    )
    quant.add_argument(
        "--calibration-rows",
        type=int,
        default=128,
        metavar="N",
        help="random rows to use without --calibration (default 128)",
    )
    quant.add_argument(
        "--max-abs-diff",
        type=float,
        default=0.1,
        help="refuse when any output moves more than this from the float model's (default 0.1)",
    )
    quant.add_argument(
        "--min-top1-agreement",
        type=float,
        default=0.98,
        metavar="FRACTION",
        help="refuse when the argmax of [N, classes] outputs agrees on fewer rows than this "
        "(default 0.98)",
    )
    quant.add_argument(
        "--bench-runs",
        type=int,
        default=200,
        metavar="N",
        help="session.run calls per model for the speed figure, the median reported (default 200)",
    )
    quant.add_argument(
        "--bench-threads",
        type=int,
        default=1,
        metavar="N",
        help="intra-op threads for both models while timing (default 1)",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    # The ONNX check imports onnxruntime, whose telemetry phones home unless this is set first.
    os.environ["ORT_DISABLE_TELEMETRY"] = "1"
    from .quantize import QuantizationRejected  # light: numpy and onnx load when used

    try:
        result = package(args)
    except QuantizationRejected as exc:
        # The figures behind the refusal, then the one error line (other errors: exit 1).
        print(exc.report)
        print(f"kubeserve package: error: {exc}", file=sys.stderr)
        return EXIT_REJECTED
    print(result.report())
    return 0


def package(args: argparse.Namespace) -> Packaged:
    out_dir: Path = args.output
    if args.tolerance < 0:
        raise LocalError("--tolerance must be >= 0")
    _check_quantize_flags(args)
    if args.torchscript and args.format != "mar":
        raise LocalError("--torchscript is for --format mar (TorchServe)")
    if args.format == "savedmodel":
        return _savedmodel(args, out_dir)
    return _torch(args, out_dir)


def _torch(args: argparse.Namespace, out_dir: Path) -> Packaged:
    if args.model.endswith((".keras", ".h5")):
        raise LocalError(
            f"{args.model}: --format {args.format} needs a PyTorch model; "
            "package Keras models with --format savedmodel"
        )
    if args.input_shape and args.example_input:
        raise LocalError("give --input-shape or --example-input, not both")
    from .torch_model import check_runs, example_input, load_model, parse_shape, torch_dtype

    shape = parse_shape(args.input_shape) if args.input_shape else None
    torch_dtype(args.input_dtype)  # fail on a bad dtype before loading the model
    example = example_input(shape, args.input_dtype, args.example_input)
    model = load_model(args.model)
    check_runs(model, example)
    if args.format == "onnx" and args.quantize:
        from .quantize import QuantSettings, package_quantized

        return package_quantized(
            model,
            example,
            out_dir,
            opset=args.opset,
            tolerance=args.tolerance,
            force=args.force,
            settings=QuantSettings(
                mode=args.quantize,
                calibration=args.calibration,
                calibration_rows=args.calibration_rows,
                max_abs_diff=args.max_abs_diff,
                min_top1_agreement=args.min_top1_agreement,
                bench_runs=args.bench_runs,
                bench_threads=args.bench_threads,
            ),
        )
    if args.format == "onnx":
        from .torch_onnx import package_onnx

        return package_onnx(
            model, example, out_dir, opset=args.opset, tolerance=args.tolerance, force=args.force
        )
    from .torch_mar import package_mar

    return package_mar(
        model,
        example,
        out_dir,
        name=_name(args, out_dir),
        handler=args.handler,
        tolerance=args.tolerance,
        force=args.force,
        torchscript=args.torchscript,
    )


def _savedmodel(args: argparse.Namespace, out_dir: Path) -> Packaged:
    if args.model.endswith((".pt", ".pth", ".ts", ".torchscript")):
        raise LocalError(
            f"{args.model}: --format savedmodel needs a Keras model (.keras or "
            "module:factory); package PyTorch models with --format onnx or mar"
        )
    if args.example_input:
        raise LocalError("--example-input is for PyTorch models; use --input-shape for Keras")
    if args.model_version < 1:
        raise LocalError("--model-version must be >= 1 (TF Serving ignores version 0)")
    name = _name(args, out_dir)
    from .torch_model import parse_shape

    shape = parse_shape(args.input_shape) if args.input_shape else None
    from .keras_savedmodel import load_model, package_savedmodel

    return package_savedmodel(
        load_model(args.model),
        out_dir,
        name=name,
        version=args.model_version,
        example_shape=shape,
        example_dtype=args.input_dtype,
        tolerance=args.tolerance,
        force=args.force,
    )


def _check_quantize_flags(args: argparse.Namespace) -> None:
    if not args.quantize:
        if args.calibration is not None:
            raise LocalError("--calibration is for --quantize")
        return
    if args.format != "onnx":
        raise LocalError("--quantize is for --format onnx (ONNX Runtime quantization)")
    if args.max_abs_diff < 0:
        raise LocalError("--max-abs-diff must be >= 0")
    if not 0 <= args.min_top1_agreement <= 1:
        raise LocalError("--min-top1-agreement is a fraction between 0 and 1")
    if args.calibration_rows < 1 or args.bench_runs < 1 or args.bench_threads < 1:
        raise LocalError("--calibration-rows, --bench-runs and --bench-threads must be >= 1")


def _name(args: argparse.Namespace, out_dir: Path) -> str:
    name: str = args.name or out_dir.resolve().name
    if not re.match(MODEL_NAME_PATTERN, name):
        raise LocalError(
            f"--name {name!r}: a model name is letters, digits, '_', '.', '-' "
            "and starts with a letter or digit"
        )
    return name
