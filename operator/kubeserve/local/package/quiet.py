"""Silence a library's own logging and warnings while it works for us."""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Iterator


@contextlib.contextmanager
def quiet(level: int) -> Iterator[None]:
    """Drop log records up to ``level`` and every warning; the one-line result we print
    says what matters."""
    logging.disable(level)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logging.disable(logging.NOTSET)
