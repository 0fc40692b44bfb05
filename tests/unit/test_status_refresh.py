"""Which work a queued key gets: a full reconcile, or only a status refresh from its Deployment."""

from __future__ import annotations

from typing import Any

import kopf
import pytest

from kubeserve import coldstarts, handlers

KEY = ("ml", "mnist")
DEPLOYMENT = {"kind": "Deployment", "status": {"replicas": 1}}


@pytest.fixture
def memo() -> kopf.Memo:
    memo = kopf.Memo()
    memo.full = set()
    memo.deployment_changed = {}
    memo.cold_starts = coldstarts.ColdStarts()
    return memo


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> list[tuple[bool, Any]]:
    seen: list[tuple[bool, Any]] = []

    async def work_on(key: Any, memo: kopf.Memo, full: bool, deployment: Any) -> None:
        seen.append((full, deployment))
        if getattr(memo, "fail", False):
            raise RuntimeError("the API server said no")

    monkeypatch.setattr(handlers, "_work_on", work_on)
    return seen


async def test_only_a_deployment_change_is_a_status_refresh(memo: kopf.Memo, calls: Any) -> None:
    memo.deployment_changed[KEY] = DEPLOYMENT
    await handlers._work(KEY, memo)
    assert calls == [(False, DEPLOYMENT)]


async def test_a_full_request_wins_over_a_deployment_change(memo: kopf.Memo, calls: Any) -> None:
    memo.deployment_changed[KEY] = DEPLOYMENT
    memo.full.add(KEY)
    await handlers._work(KEY, memo)
    assert calls == [(True, DEPLOYMENT)]


async def test_a_key_queued_for_no_known_reason_is_reconciled(memo: kopf.Memo, calls: Any) -> None:
    await handlers._work(KEY, memo)
    assert calls == [(True, None)]


async def test_a_cold_start_alone_is_a_status_refresh(memo: kopf.Memo, calls: Any) -> None:
    start = coldstarts.ColdStart("mnist-1-a", "uid-1", 0, "2026-01-01T00:00:10Z", 4.0, 9.0)
    assert memo.cold_starts.offer(KEY, start)
    await handlers._work(KEY, memo)
    assert calls == [(False, None)]


async def test_the_retry_of_a_failed_reconcile_is_full_whatever_came_meanwhile(
    memo: kopf.Memo, calls: Any
) -> None:
    memo.full.add(KEY)
    memo.fail = True
    with pytest.raises(RuntimeError):
        await handlers._work(KEY, memo)
    # A Deployment status update arrives before the retry: it must not make it a refresh.
    memo.deployment_changed[KEY] = DEPLOYMENT
    memo.fail = False
    await handlers._work(KEY, memo)
    assert calls[-1] == (True, DEPLOYMENT)
