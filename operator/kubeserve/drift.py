"""Whether a live child still carries everything the operator applies to it.

Server-side apply makes every field of our apply body true and leaves every other field
alone: the API server's defaults, the controllers' status, another tool's label. So a child
has drifted exactly when some field we set is missing or different, and re-applying is
needed exactly then. Comparing only our fields keeps a Deployment's status updates (many
per rollout) from costing a reconcile each.

The API server stores quantities in canonical form (``0.5`` CPU comes back as ``500m``),
so quantity-like values compare by amount; and it drops empty lists (``env: []``). Lists of
objects (containers, env, ports) compare as sets: each of ours must be covered by some live
item, because admission webhooks may add items (a sidecar, an env var) that our apply does
not remove either.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from decimal import Decimal, InvalidOperation
from typing import Any

# Kubernetes quantity suffixes (resource.Quantity): binary, decimal SI, and exponents.
_SUFFIXES = {
    "Ki": Decimal(2) ** 10,
    "Mi": Decimal(2) ** 20,
    "Gi": Decimal(2) ** 30,
    "Ti": Decimal(2) ** 40,
    "Pi": Decimal(2) ** 50,
    "Ei": Decimal(2) ** 60,
    "n": Decimal("1e-9"),
    "u": Decimal("1e-6"),
    "m": Decimal("1e-3"),
    "": Decimal(1),
    "k": Decimal("1e3"),
    "M": Decimal("1e6"),
    "G": Decimal("1e9"),
    "T": Decimal("1e12"),
    "P": Decimal("1e15"),
    "E": Decimal("1e18"),
}
_QUANTITY = re.compile(
    r"([+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)(Ki|Mi|Gi|Ti|Pi|Ei|[numkMGTPE]?)"
)


def quantity(value: Any) -> Decimal | None:
    """The amount a Kubernetes quantity stands for; None when ``value`` is not one."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        return None
    match = _QUANTITY.fullmatch(str(value).strip())
    if match is None:
        return None
    try:
        return Decimal(match.group(1)) * _SUFFIXES[match.group(2)]
    except InvalidOperation:
        return None


def covers(live: Any, ours: Any) -> bool:
    """Whether ``live`` holds every field of ``ours`` (our apply body, or a part of it)."""
    if isinstance(ours, Mapping):
        if not isinstance(live, Mapping):
            return False
        return all(
            covers(live[key], value) if key in live else value in (None, [])
            for key, value in ours.items()
        )
    if isinstance(ours, Sequence) and not isinstance(ours, str):
        if not isinstance(live, Sequence) or isinstance(live, str):
            return False
        if all(isinstance(item, Mapping) for item in ours):
            return all(any(covers(candidate, item) for candidate in live) for item in ours)
        return len(live) == len(ours) and all(map(covers, live, ours))
    if live == ours and type(live) is type(ours):
        return True
    amount = quantity(ours)
    return amount is not None and amount == quantity(live)


def drifted(live: Mapping[str, Any], desired: Mapping[str, Any]) -> bool:
    """Whether re-applying ``desired`` would change ``live``."""
    return not covers(live, desired)
