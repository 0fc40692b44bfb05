"""A small synchronous API client for the tests and the node simulator (admin credentials).

Tests read and write objects through it, and through kubectl and helm where a user would.
Every wait is bounded: ``eventually`` raises with what it last saw.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import requests

from kubeserve.kube import resource_path

T = TypeVar("T")
MERGE = "application/merge-patch+json"
APPLY = "application/apply-patch+yaml"


class ApiFailure(AssertionError):
    def __init__(self, response: requests.Response) -> None:
        super().__init__(
            f"{response.request.method} {response.url}: {response.status_code} "
            f"{response.text[:500]}"
        )
        self.status = response.status_code


class Kube:
    def __init__(self, server: str, ca: str, cert: tuple[str, str]) -> None:
        self.server = server.rstrip("/")
        self.session = requests.Session()
        # No proxy, and no $REQUESTS_CA_BUNDLE overriding this cluster's own CA.
        self.session.trust_env = False
        self.session.verify = ca
        self.session.cert = cert

    def request(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        ctype: str = "application/json",
        params: dict[str, Any] | None = None,
        ok: tuple[int, ...] = (),
    ) -> Any:
        response = self.session.request(
            method,
            self.server + path,
            params=params,
            timeout=30,
            data=None if body is None else json.dumps(body),
            headers={"Content-Type": ctype, "Accept": "application/json"},
        )
        if response.status_code >= 400 and response.status_code not in ok:
            raise ApiFailure(response)
        return response.json() if response.content and response.status_code < 400 else None

    def get(self, api_version: str, plural: str, namespace: str | None, name: str) -> Any:
        return self.request("GET", resource_path(api_version, plural, namespace, name), ok=(404,))

    def list(
        self, api_version: str, plural: str, namespace: str | None = None, **params: Any
    ) -> list[dict[str, Any]]:
        page = self.request("GET", resource_path(api_version, plural, namespace), params=params)
        return list(page["items"])

    def create(self, obj: dict[str, Any], plural: str) -> Any:
        meta = obj["metadata"]
        path = resource_path(obj["apiVersion"], plural, meta.get("namespace"))
        return self.request("POST", path, body=obj)

    def patch(
        self,
        api_version: str,
        plural: str,
        namespace: str | None,
        name: str,
        body: Any,
        *,
        subresource: str = "",
        ctype: str = MERGE,
    ) -> Any:
        path = resource_path(api_version, plural, namespace, name)
        return self.request(
            "PATCH", path + (f"/{subresource}" if subresource else ""), body=body, ctype=ctype
        )

    def apply(self, obj: dict[str, Any], plural: str, manager: str) -> Any:
        meta = obj["metadata"]
        path = resource_path(obj["apiVersion"], plural, meta.get("namespace"), meta["name"])
        return self.request(
            "PATCH", path, body=obj, ctype=APPLY, params={"fieldManager": manager, "force": "true"}
        )

    def delete(
        self, api_version: str, plural: str, namespace: str | None, name: str, **options: Any
    ) -> None:
        path = resource_path(api_version, plural, namespace, name)
        body = {"apiVersion": "v1", "kind": "DeleteOptions", **options} if options else None
        self.request("DELETE", path, body=body, ok=(404,))

    def watch(
        self, path: str, *, resource_version: str, timeout: int, **params: Any
    ) -> Iterator[dict[str, Any]]:
        """The events of one watch request, which the server ends after ``timeout`` s."""
        query = {
            "watch": "1",
            "resourceVersion": resource_version,
            "timeoutSeconds": str(timeout),
            "allowWatchBookmarks": "true",
            **params,
        }
        with self.session.get(
            self.server + path, params=query, stream=True, timeout=(10, timeout + 10)
        ) as response:
            if response.status_code >= 400:
                raise ApiFailure(response)
            for line in response.iter_lines():
                if line:
                    yield json.loads(line)


def eventually(
    check: Callable[[], T | None], *, timeout: float, step: float = 0.2, what: str = ""
) -> T:
    """``check()`` once it returns something truthy; fails after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        try:
            last = check()
        except ApiFailure as exc:
            last = exc
        else:
            if last:
                return last
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout:.0f}s: {what or check}; last: {last!r}")
        time.sleep(step)


def condition(obj: dict[str, Any] | None, kind: str) -> dict[str, Any] | None:
    conditions = ((obj or {}).get("status") or {}).get("conditions") or []
    return next((c for c in conditions if c.get("type") == kind), None)
