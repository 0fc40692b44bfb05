"""Shared Hypothesis settings and the example counts docs/reliability.md reports.

Every property test is derandomized (a fixed seed derived from the test), keeps no example
database and has an explicit max_examples, so CI runs the same examples every time.
"""

from __future__ import annotations

from hypothesis import HealthCheck, settings

# The counts docs/reliability.md quotes; change both together.
RENDER_EXAMPLES = 1000
CLI_EXAMPLES = 150
FIELD_EXAMPLES = 200  # per spec field, 10 fields
CEL_EXAMPLES = 300


def fuzz(max_examples: int) -> settings:
    return settings(
        max_examples=max_examples,
        derandomize=True,
        database=None,
        deadline=None,
        print_blob=True,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


# Figures the suite prints at the end (docs/reliability.md quotes a run of them).
FIGURES: dict[str, float] = {}
BOUNDS: dict[str, tuple[float, float]] = {}


def count(name: str, amount: float = 1) -> None:
    FIGURES[name] = FIGURES.get(name, 0) + amount


def bound(name: str, observed: float, limit: float) -> None:
    """An observed request count and the bound a test holds it to (the worst case kept)."""
    old = BOUNDS.get(name)
    if old is None or observed > old[0]:
        BOUNDS[name] = (observed, limit)
