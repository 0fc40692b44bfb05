"""The resync period: the configured one, stretched so drift repair keeps to a rate."""

from __future__ import annotations

import pytest

from kubeserve.handlers import RESYNC_MAX_PER_SECOND, resync_period


@pytest.mark.parametrize("count", [0, 1, 100, 1_000, 5_000, 50_000])
def test_resyncs_never_exceed_the_rate(count: int) -> None:
    period = resync_period(300.0, count)
    assert period >= 300.0
    # Each round spreads its objects over half the period.
    assert count / (period / 2) <= RESYNC_MAX_PER_SECOND


def test_the_configured_period_holds_while_under_the_rate() -> None:
    assert resync_period(300.0, 1_000) == 300.0
    assert resync_period(300.0, 5_000) == 1_000.0
