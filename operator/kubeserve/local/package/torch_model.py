"""Load a PyTorch model (TorchScript file or factory) and build its example input."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import LocalError, first_line
from ..factory import call_factory, is_factory_reference

# The dtypes an example input may have, by the name users type.
DTYPES = (
    "float32",
    "float64",
    "float16",
    "bfloat16",
    "int64",
    "int32",
    "int16",
    "int8",
    "uint8",
    "bool",
)


@dataclass(frozen=True)
class TorchModel:
    module: Any  # torch.nn.Module or torch.jit.ScriptModule, in eval mode
    scripted: bool  # already TorchScript (loaded from a file)
    source: str


def load_model(reference: str) -> TorchModel:
    import torch

    if is_factory_reference(reference):
        module = call_factory(reference)
        if not isinstance(module, torch.nn.Module):
            raise LocalError(
                f"{reference}: the factory returned {type(module).__name__}, not a torch.nn.Module"
            )
        return TorchModel(module.eval(), isinstance(module, torch.jit.ScriptModule), reference)
    path = Path(reference)
    if not path.is_file():
        raise LocalError(f"{reference}: no such file, and not a module:factory reference")
    try:
        module = torch.jit.load(str(path), map_location="cpu")  # type: ignore[no-untyped-call]
    except Exception as exc:
        raise LocalError(
            f"{reference}: not a TorchScript file (torch.jit.save); for a state_dict or a "
            f"pickled model use module:factory ({first_line(exc)})"
        ) from exc
    return TorchModel(module.eval(), True, reference)


def parse_shape(text: str) -> tuple[int, ...]:
    try:
        shape = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise LocalError(
            f"--input-shape {text!r}: expected comma-separated positive integers such as 1,4"
        ) from None
    if not shape or any(dim < 1 for dim in shape):
        raise LocalError(
            f"--input-shape {text!r}: expected comma-separated positive integers such as 1,4"
        )
    return shape


def example_input(shape: Sequence[int] | None, dtype: str, tensor_file: str | None) -> Any:
    """The example input: a tensor file, or random data of the given shape and dtype.

    The first dimension is the batch dimension; it becomes dynamic in the exported model.
    """
    import torch

    if tensor_file:
        try:
            tensor = torch.load(tensor_file, map_location="cpu", weights_only=True)
        except Exception as exc:
            raise LocalError(f"--example-input {tensor_file}: {first_line(exc)}") from exc
        if not isinstance(tensor, torch.Tensor):
            raise LocalError(
                f"--example-input {tensor_file}: holds {type(tensor).__name__}, expected one "
                "tensor (torch.save(tensor, path))"
            )
    elif shape:
        tensor = random_like(torch.zeros(tuple(shape), dtype=torch_dtype(dtype)), batch=shape[0])
    else:
        raise LocalError(
            "an example input is needed: --input-shape (and --input-dtype) or "
            "--example-input FILE.pt"
        )
    if tensor.dim() == 0:
        raise LocalError("the example input needs a leading batch dimension (got a scalar)")
    return tensor


def torch_dtype(name: str) -> Any:
    import torch

    if name not in DTYPES:
        raise LocalError(f"--input-dtype {name!r}: expected one of {', '.join(DTYPES)}")
    return getattr(torch, name)


def random_like(template: Any, *, batch: int) -> Any:
    """Random data shaped like `template` with `batch` rows; integer data stays in its range."""
    import torch

    generator = torch.Generator().manual_seed(batch)
    shape = (batch, *template.shape[1:])
    if template.dtype == torch.bool:
        return torch.randint(0, 2, shape, generator=generator).bool()
    if template.dtype.is_floating_point:
        return torch.randn(shape, generator=generator).to(template.dtype)
    # Integers are often indices (embeddings): stay within what the example used.
    low = int(template.min()) if template.numel() else 0
    high = int(template.max()) + 1 if template.numel() else 10
    if high - low < 2:
        low, high = 0, max(high, 10)
    return torch.randint(low, high, shape, generator=generator).to(template.dtype)


def check_runs(model: TorchModel, example: Any) -> None:
    """Fail early, in the user's terms, when the model cannot take the example input."""
    try:
        run_torch(model.module, example)
    except LocalError:
        raise
    except Exception as exc:
        raise LocalError(
            f"{model.source} cannot run on the example input (shape {list(example.shape)}, "
            f"{str(example.dtype).removeprefix('torch.')}): {first_line(exc)}"
        ) from exc


def run_torch(module: Any, tensor: Any) -> Any:
    """The model's output as a numpy array (the first output when it returns several)."""
    import torch

    with torch.no_grad():
        output = module(tensor)
    if isinstance(output, (tuple, list)):
        output = output[0]
    if not isinstance(output, torch.Tensor):
        raise LocalError(f"the model returned {type(output).__name__}; expected a tensor")
    return output.detach().cpu().numpy()


def max_abs_diff(actual: Any, expected: Any) -> float:
    import numpy as np

    if actual.shape != expected.shape:
        raise LocalError(
            f"output shape {tuple(actual.shape)} differs from torch's {tuple(expected.shape)}"
        )
    if actual.size == 0:
        return 0.0
    return float(np.max(np.abs(actual.astype(np.float64) - expected.astype(np.float64))))
