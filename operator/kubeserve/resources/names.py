"""Deterministic child names that always satisfy Kubernetes' length and character limits."""

from __future__ import annotations

import hashlib

# Services need an RFC 1035 label (63 chars, starts with a letter); using it for every child
# keeps one name per ModelDeployment and leaves room for pod-name suffixes.
MAX_NAME = 63
_HASH_LEN = 8


def child_name(md_name: str, suffix: str = "") -> str:
    """``md_name`` + ``-suffix``, shortened with a stable hash when too long."""
    base = md_name if md_name[0].isalpha() else f"md-{md_name}"
    name = f"{base}-{suffix}" if suffix else base
    if len(name) <= MAX_NAME and "." not in name and base == md_name:
        return name
    # Too long, dotted (legal in a ModelDeployment name, not in a Service name) or given an
    # "md-" prefix (a Service name starts with a letter): the hash of the name as the user
    # wrote it keeps "a.b" apart from "a-b", and "1abc" apart from "md-1abc".
    name = f"{md_name}-{suffix}" if suffix else md_name
    digest = hashlib.sha256(name.encode()).hexdigest()[:_HASH_LEN]
    tail = f"-{digest}-{suffix}" if suffix else f"-{digest}"
    head = base.replace(".", "-")[: MAX_NAME - len(tail)].rstrip("-")
    return f"{head}{tail}"


def label_value(value: str) -> str:
    """A label value (63 chars, alphanumeric at both ends) standing for ``value``."""
    if len(value) <= MAX_NAME:
        return value
    digest = hashlib.sha256(value.encode()).hexdigest()[:_HASH_LEN]
    return f"{value[: MAX_NAME - _HASH_LEN - 1].rstrip('-.')}-{digest}"
