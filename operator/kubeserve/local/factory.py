"""Resolve a user's `module:factory` or `path/to/file.py:factory` reference to a callable.

`kubeserve package` takes trained models this way so that users need not save them in a
framework-specific file first: the factory builds (and loads weights into) the model.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .errors import LocalError, first_line

_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")


def is_factory_reference(value: str) -> bool:
    """True for `pkg.mod:build` or `dir/file.py:build`; a path to an existing file is not one."""
    if Path(value).exists() or ":" not in value:
        return False
    module, _, attr = value.rpartition(":")
    return bool(module) and bool(_IDENTIFIER.match(attr))


def load_factory(reference: str) -> Callable[[], Any]:
    module_ref, _, attr = reference.rpartition(":")
    module = _import(module_ref, reference)
    target: Any = module
    for part in attr.split("."):
        if not hasattr(target, part):
            raise LocalError(f"{reference}: {module_ref} has no attribute {attr!r}")
        target = getattr(target, part)
    if not callable(target):
        raise LocalError(f"{reference}: {attr} is not callable")
    factory: Callable[[], Any] = target
    return factory


def call_factory(reference: str) -> Any:
    factory = load_factory(reference)
    try:
        return factory()
    except Exception as exc:
        raise LocalError(
            f"{reference}: the factory raised {type(exc).__name__}: {first_line(exc)}"
        ) from exc


def _import(module_ref: str, reference: str) -> Any:
    if module_ref.endswith(".py") or os.sep in module_ref:
        return _import_file(Path(module_ref), reference)
    # Like `python -m`: modules next to the user's working directory are importable.
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        return importlib.import_module(module_ref)
    except Exception as exc:
        raise LocalError(
            f"{reference}: cannot import {module_ref}: {type(exc).__name__}: {first_line(exc)}"
        ) from exc


def _import_file(path: Path, reference: str) -> Any:
    if not path.is_file():
        raise LocalError(f"{reference}: no such file {path}")
    name = f"_kubeserve_factory_{path.stem}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise LocalError(f"{reference}: cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    # Registered before running it, so dataclasses and pickling inside the module work.
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        del sys.modules[name]
        raise LocalError(
            f"{reference}: cannot import {path}: {type(exc).__name__}: {first_line(exc)}"
        ) from exc
    return module
