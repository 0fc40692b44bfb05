"""KubeClient.list against a real HTTP server on 127.0.0.1 that pages like the API server."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web
from kopf import ConnectionInfo

from kubeserve.kube import ApiError, KubeClient

ITEMS = [{"metadata": {"name": f"cm-{i}", "namespace": "ml"}} for i in range(7)]


@pytest.fixture
async def server() -> AsyncIterator[tuple[str, list[dict[str, str]]]]:
    seen: list[dict[str, str]] = []

    async def configmaps(request: web.Request) -> web.Response:
        seen.append(dict(request.query))
        if request.query.get("continue") == "expired":
            return web.json_response(
                {"kind": "Status", "code": 410, "message": "expired"}, status=410
            )
        start = int(request.query.get("continue") or 0)
        end = start + int(request.query["limit"])
        meta: dict[str, Any] = {"resourceVersion": "42"}
        if end < len(ITEMS):
            meta["continue"] = str(end)
        return web.json_response(
            {"kind": "ConfigMapList", "metadata": meta, "items": ITEMS[start:end]}
        )

    app = web.Application()
    app.router.add_get("/api/v1/namespaces/ml/configmaps", configmaps)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    yield f"http://127.0.0.1:{port}", seen
    await runner.cleanup()


async def test_list_follows_continue_tokens_and_sends_the_selector(
    server: tuple[str, list[dict[str, str]]],
) -> None:
    url, seen = server
    kube = KubeClient(ConnectionInfo(server=url))
    try:
        items = await kube.list("v1", "configmaps", "ml", label_selector="a=b", page_size=3)
    finally:
        await kube.close()
    assert items == ITEMS
    assert [q.get("continue") for q in seen] == [None, "3", "6"]
    assert {q["labelSelector"] for q in seen} == {"a=b"}
    assert {q["limit"] for q in seen} == {"3"}


async def test_an_expired_continue_token_is_an_error_not_a_short_list(
    server: tuple[str, list[dict[str, str]]], monkeypatch: pytest.MonkeyPatch
) -> None:
    url, _ = server
    kube = KubeClient(ConnectionInfo(server=url))
    original = kube._request

    async def expire(method: str, path: str, **kwargs: Any) -> Any:
        page = await original(method, path, **kwargs)
        if page.get("metadata", {}).get("continue"):
            page["metadata"]["continue"] = "expired"
        return page

    monkeypatch.setattr(kube, "_request", expire)
    try:
        with pytest.raises(ApiError) as raised:
            await kube.list("v1", "configmaps", "ml", page_size=3)
    finally:
        await kube.close()
    assert raised.value.status == 410
