"""Registers the local commands on the CLI. Heavy imports happen only when a command runs."""

from __future__ import annotations

import argparse
from typing import Any


def add_commands(sub: Any) -> None:
    """Placeholder until serve/package land: registers nothing."""
    del sub


__all__ = ["add_commands", "argparse"]
