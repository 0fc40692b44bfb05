"""The only module that talks HTTP to the Kubernetes API server.

A small async client over aiohttp (already a kopf dependency): server-side apply with one
field manager, get, delete with a UID precondition, status patch, discovery. Transient
failures (429 with Retry-After, 5xx, timeouts, dropped connections) are retried a bounded
number of times with exponential backoff; after that ``ApiError.transient`` tells the caller
to try again later. This module never decides what to build.
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from kopf import ConnectionInfo

from . import metrics

logger = logging.getLogger(__name__)

APPLY_PATCH = "application/apply-patch+yaml"
MERGE_PATCH = "application/merge-patch+json"
TRANSIENT_STATUSES = {429, 500, 502, 503, 504}
# 409 on apply/delete is a lost race with another writer: retrying later converges.
RETRY_LATER_STATUSES = TRANSIENT_STATUSES | {409}


class ApiError(Exception):
    def __init__(self, status: int, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(f"HTTP {status}: {message}")
        self.status = status
        self.message = message
        self.retry_after = retry_after

    @property
    def transient(self) -> bool:
        return self.status in RETRY_LATER_STATUSES or self.status == 0


@dataclass
class RetryPolicy:
    attempts: int = 4
    base_delay: float = 0.2
    max_delay: float = 10.0

    def delay(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return min(retry_after, self.max_delay)
        return float(min(self.base_delay * 2**attempt, self.max_delay))


def resource_path(
    api_version: str, plural: str, namespace: str | None = None, name: str | None = None
) -> str:
    prefix = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
    path = f"{prefix}/namespaces/{namespace}/{plural}" if namespace else f"{prefix}/{plural}"
    return f"{path}/{name}" if name else path


@dataclass
class KubeClient:
    # kopf's login result: it turns every kubeconfig form (token, basic auth, client
    # certificates and CAs as paths or embedded data) into headers and an SSL context.
    credentials: ConnectionInfo
    refresh: Callable[[], Awaitable[ConnectionInfo]] | None = None
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    timeout: float = 30.0
    _session: aiohttp.ClientSession | None = field(default=None, init=False, repr=False)

    async def use(self, credentials: ConnectionInfo) -> None:
        """Send the next requests with these credentials (kopf logged in again)."""
        if credentials != self.credentials:
            self.credentials = credentials
            await self.close()

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    # --- verbs -------------------------------------------------------------------------

    async def get(
        self, api_version: str, plural: str, namespace: str | None, name: str
    ) -> dict[str, Any] | None:
        try:
            return await self._request("GET", resource_path(api_version, plural, namespace, name))
        except ApiError as exc:
            if exc.status == 404:
                return None
            raise

    async def list(
        self,
        api_version: str,
        plural: str,
        namespace: str | None = None,
        *,
        label_selector: str | None = None,
        page_size: int = 500,
    ) -> list[dict[str, Any]]:
        """All matching objects, fetched in pages so a large list never lands at once."""
        params = {"limit": str(page_size)}
        if label_selector:
            params["labelSelector"] = label_selector
        items: list[dict[str, Any]] = []
        while True:
            page = await self._request(
                "GET", resource_path(api_version, plural, namespace), params=params
            )
            items.extend(page.get("items", []))
            token = (page.get("metadata") or {}).get("continue")
            if not token:
                return items
            params["continue"] = token

    async def may_list(self, api_version: str, plural: str) -> bool:
        """Whether this identity may list the resource: one page of one item; 403 is no."""
        path = resource_path(api_version, plural)
        try:
            await self._request("GET", path, params={"limit": "1"})
        except ApiError as exc:
            if exc.status == 403:
                return False
            raise
        return True

    async def apply(
        self, obj: dict[str, Any], plural: str, *, field_manager: str, force: bool = True
    ) -> dict[str, Any]:
        meta = obj["metadata"]
        path = resource_path(obj["apiVersion"], plural, meta.get("namespace"), meta["name"])
        params = {"fieldManager": field_manager, "force": "true" if force else "false"}
        return await self._request("PATCH", path, body=obj, content_type=APPLY_PATCH, params=params)

    async def delete(
        self, api_version: str, plural: str, namespace: str | None, name: str, *, uid: str
    ) -> None:
        """Delete exactly the object with this UID; a replacement with the same name survives."""
        body = {
            "apiVersion": "v1",
            "kind": "DeleteOptions",
            "preconditions": {"uid": uid},
            "propagationPolicy": "Background",
        }
        try:
            await self._request(
                "DELETE", resource_path(api_version, plural, namespace, name), body=body
            )
        except ApiError as exc:
            if exc.status != 404:
                raise

    async def patch_status(
        self,
        api_version: str,
        plural: str,
        namespace: str,
        name: str,
        status: dict[str, Any],
        *,
        uid: str | None = None,
    ) -> dict[str, Any]:
        """Merge ``status`` in; with ``uid``, only into that object (else 409: a namesake)."""
        path = resource_path(api_version, plural, namespace, name) + "/status"
        body: dict[str, Any] = {"status": status}
        if uid:
            body["metadata"] = {"uid": uid}
        return await self._request("PATCH", path, body=body, content_type=MERGE_PATCH)

    async def post_event(
        self, involved: dict[str, Any], *, type: str, reason: str, message: str, now: str
    ) -> None:
        """A core/v1 Event about ``involved``; losing one is logged, never fatal."""
        meta = involved["metadata"]
        body = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {
                "name": f"{meta['name']}.{uuid.uuid4().hex[:16]}",
                "namespace": meta["namespace"],
            },
            "involvedObject": {
                "apiVersion": involved["apiVersion"],
                "kind": involved["kind"],
                "name": meta["name"],
                "namespace": meta["namespace"],
                "uid": meta.get("uid", ""),
            },
            "type": type,
            "reason": reason,
            "message": message[:1024],
            "source": {"component": "kubeserve"},
            "reportingComponent": "kubeserve.io/operator",
            "reportingInstance": "kubeserve",
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
        }
        try:
            await self._request("POST", resource_path("v1", "events", meta["namespace"]), body=body)
        except ApiError as exc:
            logger.warning("could not post event %s for %s: %s", reason, meta["name"], exc)

    async def api_available(self, api_version: str) -> bool:
        """Whether the API group/version is served (e.g. KEDA's CRDs are installed)."""
        try:
            await self._request("GET", resource_path(api_version, "").rstrip("/"))
        except ApiError as exc:
            if exc.status == 404:
                return False
            raise
        return True

    # --- transport -----------------------------------------------------------------------

    async def _request(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        content_type: str = "application/json",
        params: dict[str, str] | None = None,
    ) -> dict[str, Any]:
        refreshed = False
        attempt = 0
        while True:
            try:
                return await self._send(method, path, body, content_type, params)
            except ApiError as exc:
                if exc.status == 401 and self.refresh is not None and not refreshed:
                    # Projected service-account tokens rotate; log in again once.
                    await self.use(await self.refresh())
                    refreshed = True
                    continue
                if exc.status not in TRANSIENT_STATUSES and exc.status != 0:
                    raise
                attempt += 1
                if attempt >= self.retry.attempts:
                    raise
                delay = self.retry.delay(attempt - 1, exc.retry_after)
                logger.debug("retrying %s %s in %.1fs after %s", method, path, delay, exc)
                await asyncio.sleep(delay)

    async def _send(
        self,
        method: str,
        path: str,
        body: Any,
        content_type: str,
        params: dict[str, str] | None,
    ) -> dict[str, Any]:
        session = self._get_session()
        data = json.dumps(body) if body is not None else None
        headers = {"Accept": "application/json"}
        if data is not None:
            headers["Content-Type"] = content_type
        code = 0
        try:
            async with session.request(
                method,
                self.credentials.server.rstrip("/") + path,
                data=data,
                params=params,
                headers=headers,
            ) as response:
                code = response.status
                text = await response.text()
                if response.status >= 400:
                    raise ApiError(
                        response.status,
                        _error_message(text),
                        retry_after=_retry_after(response.headers.get("Retry-After")),
                    )
                return dict(json.loads(text)) if text else {}
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise ApiError(0, f"{type(exc).__name__}: {exc}") from exc
        finally:
            metrics.API_REQUESTS.labels(method, str(code)).inc()

    def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            creds = self.credentials
            headers = {"User-Agent": "kubeserve", **creds.as_http_headers()}
            tls = creds.server.startswith("https")
            connector = aiohttp.TCPConnector(ssl=creds.as_ssl_context() if tls else False, limit=64)
            self._session = aiohttp.ClientSession(
                headers=headers,
                connector=connector,
                timeout=aiohttp.ClientTimeout(total=self.timeout),
            )
        return self._session

    # --- whole-object writes (the Lease of leader election) -----------------------------

    async def create(
        self, api_version: str, plural: str, namespace: str | None, obj: dict[str, Any]
    ) -> dict[str, Any]:
        """POST a new object; 409 (AlreadyExists) when another writer created it first."""
        return await self._request("POST", resource_path(api_version, plural, namespace), body=obj)

    async def replace(
        self, api_version: str, plural: str, namespace: str | None, obj: dict[str, Any]
    ) -> dict[str, Any]:
        """PUT the whole object; with metadata.resourceVersion set, 409 if it changed since."""
        name = obj["metadata"]["name"]
        return await self._request(
            "PUT", resource_path(api_version, plural, namespace, name), body=obj
        )


def _error_message(text: str) -> str:
    try:
        return str(json.loads(text).get("message", text))
    except (ValueError, AttributeError):
        return text[:500]


def _retry_after(value: str | None) -> float | None:
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None
