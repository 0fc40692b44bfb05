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
