"""Check that a fetched model has the layout its runtime serves, with two small fixes.

Per runtime (the model directory is what the server sees at /mnt/models):

- tfserving: ``<version>/saved_model.pb`` with a numeric version directory (``.pbtxt`` too).
  ``<name>/<version>/saved_model.pb`` is accepted and hoisted (TF Serving's own export layout,
  ``base/<version>``, is what people upload). A bare ``saved_model.pb`` is refused rather than
  wrapped into ``1/``: the version number drives TF Serving's version policy and is the user's.
- torchserve: at least one ``*.mar`` (or an unpacked model folder with ``MAR-INF/MANIFEST.json``).
  With a model name, ``<name>.mar`` (or folder ``<name>``) must be there: the generated
  config.properties loads exactly that. If it is missing and there is exactly one ``.mar``,
  that one is renamed to ``<name>.mar``.
- onnxruntime: ``model.onnx``. If it is missing and there is exactly one ``*.onnx``, it is
  renamed to ``model.onnx`` (an export is usually called after the model; external data files
  are referenced by their own names, so they keep working). Two or more are refused.

For every runtime, a single top-level directory that holds the expected layout is hoisted
(archives usually wrap their content in one folder).

Errors name what was found instead, so the message alone tells the user what to fix.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from .errors import LayoutError

log = logging.getLogger(__name__)

RUNTIMES = ("onnxruntime", "torchserve", "tfserving")
# Our own bookkeeping files and staging dirs start with this; the checks ignore them.
INTERNAL_PREFIX = ".kubeserve"
_SHOWN = 12


def check(root: Path, runtime: str, model_name: str | None = None) -> None:
    """Check (and fix, as documented above) the layout under ``root``."""
    checks: dict[str, Callable[[Path, str | None], str | None]] = {
        "onnxruntime": _onnx,
        "torchserve": _torchserve,
        "tfserving": _tfserving,
    }
    if runtime not in checks:
        raise LayoutError(f"unknown runtime {runtime!r}; expected one of {', '.join(RUNTIMES)}")
    problem = checks[runtime](root, model_name)
    if problem is None:
        return
    # One wrapping folder: look inside it, and hoist its content if that is the layout.
    entries = _entries(root)
    if len(entries) == 1 and entries[0].is_dir() and not entries[0].is_symlink():
        inner = entries[0]
        if checks[runtime](inner, model_name) is None:
            log.info("layout: using the content of the single folder %s/", inner.name)
            _hoist(inner, root)
            return
    raise LayoutError(f"{runtime}: {problem}; found: {found(root)}")


def found(root: Path) -> str:
    """A short listing of what is under ``root`` (two levels), for error messages."""
    shown: list[str] = []
    for entry in _entries(root):
        if entry.is_dir() and not entry.is_symlink():
            children = [c.name for c in _entries(entry)]
            inner = ", ".join(children[:4]) + (", ..." if len(children) > 4 else "")
            shown.append(f"{entry.name}/ [{inner}]" if children else f"{entry.name}/ (empty)")
        else:
            shown.append(entry.name)
    if not shown:
        return "nothing (the source is empty)"
    more = f" and {len(shown) - _SHOWN} more" if len(shown) > _SHOWN else ""
    return ", ".join(shown[:_SHOWN]) + more


def _entries(directory: Path) -> list[Path]:
    return sorted(p for p in directory.iterdir() if not p.name.startswith(INTERNAL_PREFIX))


def _hoist(inner: Path, root: Path) -> None:
    # Rename the folder out of the way first, so a child with the folder's own name can move.
    parked = root / f"{INTERNAL_PREFIX}-hoist"
    inner.rename(parked)
    for child in parked.iterdir():
        child.rename(root / child.name)
    parked.rmdir()


def _onnx(root: Path, model_name: str | None) -> str | None:
    if (root / "model.onnx").is_file():
        return None
    candidates = [p for p in _entries(root) if p.suffix.lower() == ".onnx" and p.is_file()]
    if len(candidates) == 1:
        log.info("layout: renaming %s to model.onnx", candidates[0].name)
        candidates[0].rename(root / "model.onnx")
        return None
    if len(candidates) > 1:
        names = ", ".join(p.name for p in candidates)
        return f"expected model.onnx, and cannot choose between several .onnx files ({names})"
    return "expected model.onnx at the top of the model directory"


def _is_model_folder(path: Path) -> bool:
    return (path / "MAR-INF" / "MANIFEST.json").is_file()


def _torchserve(root: Path, model_name: str | None) -> str | None:
    entries = _entries(root)
    mars = [p for p in entries if p.suffix == ".mar" and p.is_file()]
    folders = [p for p in entries if p.is_dir() and _is_model_folder(p)]
    if not mars and not folders:
        return "expected at least one <model>.mar (or a model folder with MAR-INF/MANIFEST.json)"
    if model_name is None:
        return None
    if (root / f"{model_name}.mar").is_file() or _is_model_folder(root / model_name):
        return None
    if len(mars) == 1 and not folders:
        log.info("layout: renaming %s to %s.mar", mars[0].name, model_name)
        mars[0].rename(root / f"{model_name}.mar")
        return None
    return f"expected {model_name}.mar for model {model_name!r}"


def _tfserving(root: Path, model_name: str | None) -> str | None:
    versions = [
        p
        for p in _entries(root)
        if p.is_dir()
        and p.name.isascii()
        and p.name.isdigit()
        and ((p / "saved_model.pb").is_file() or (p / "saved_model.pbtxt").is_file())
    ]
    if versions:
        return None
    if (root / "saved_model.pb").is_file():
        return (
            "expected <version>/saved_model.pb with a numeric version directory; "
            "saved_model.pb is at the top: move the SavedModel into a folder such as 1/"
        )
    return "expected <version>/saved_model.pb with a numeric version directory (e.g. 1/)"
