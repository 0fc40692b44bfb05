"""`kubeserve package MODEL --format onnx|mar|savedmodel -o DIR`: flags and dispatch."""

from __future__ import annotations

import argparse
import os
import re
from pathlib import Path

from ...api import MODEL_NAME_PATTERN
from ..errors import LocalError
from .result import Packaged

FORMATS = ("onnx", "mar", "savedmodel")
DEFAULT_TOLERANCE = 1e-4
DEFAULT_OPSET = 18  # torch_onnx.DEFAULT_OPSET, repeated so --help does not import torch

USAGE_EXAMPLES = """\
examples:
  kubeserve package mypkg.models:build --input-shape 1,3,224,224 --format onnx -o out/resnet
  kubeserve package model.torchscript.pt --input-shape 1,4 --format mar --name iris -o out
  kubeserve package model.keras --format savedmodel --name iris -o out
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
    parser.add_argument("--force", action="store_true", help="overwrite an existing artifact")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    # The ONNX check imports onnxruntime, whose telemetry phones home unless this is set first.
    os.environ["ORT_DISABLE_TELEMETRY"] = "1"
    result = package(args)
    print(result.report())
    return 0


def package(args: argparse.Namespace) -> Packaged:
    out_dir: Path = args.output
    if args.tolerance < 0:
        raise LocalError("--tolerance must be >= 0")
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


def _name(args: argparse.Namespace, out_dir: Path) -> str:
    name: str = args.name or out_dir.resolve().name
    if not re.match(MODEL_NAME_PATTERN, name):
        raise LocalError(
            f"--name {name!r}: a model name is letters, digits, '_', '.', '-' "
            "and starts with a letter or digit"
        )
    return name
