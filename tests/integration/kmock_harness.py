"""Test harness: kmock that creates on apply, object helpers, and the operator runner.

kmock treats a server-side apply PATCH to a missing object as 404 (see shared/KMOCK.md).
A real API server creates the object; so does ApplyingEmulator, assigning a uid and a
resourceVersion like the real server would. kmock then applies the patch to it and sends the
one watch event a real server sends for a create, typed MODIFIED instead of ADDED (the
operator treats both alike; an ADDED of our own before it would double every create's
watch traffic, which the reconcile benchmark would count against the operator). An apply
that changes nothing sends no watch event, as on a real API server. Field
ownership and conflicts remain unemulated; the kind e2e suite is the judge of those.

kmock is written for a handful of objects: it picks the reaction for a request by replaying
the whole request history through every reaction's filters, finds an object by scanning all
of them, and formats a traceback into every 404. So each request cost O(requests + objects),
and a few hundred ModelDeployments took minutes. ApplyingEmulator matches filter chains
against the one request, finds a named object by its key and leaves the traceback out; the
responses are otherwise the same.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import itertools
import os
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import kopf
from kmock import KubernetesEmulator
from kmock._internal import apps, dsl, enums, k8s, rendering

from kubeserve import api
from kubeserve.config import OperatorConfig
from kubeserve.resources.kinds import CHILD_KINDS

MD_RESOURCE = f"{api.GROUP}/{api.VERSION}/{api.PLURAL}"
NAMESPACE = "ml"
APPLY = "application/apply-patch+yaml"
_versions = itertools.count(1)


def lets_through(view: Any, request: rendering.Request) -> bool:
    """Whether a kmock view would list ``request``, in O(chain length) for plain filter chains."""
    if type(view) is dsl.Filter:
        # The source first: a callable criterion sees only what the earlier filters passed.
        return lets_through(view._source, request) and bool(view.criteria(request))
    if type(view) is dsl.Priority:
        return lets_through(view._source, request)
    if isinstance(view, dsl.Root):
        return True
    return request in view  # slices, groups, exclusions: kmock's own history replay


class DirectMatching(apps.RawHandler):  # type: ignore[misc]
    """kmock's reaction choice (highest priority first), without the history replay."""

    __slots__ = ()

    async def _handle(self, request: rendering.Request) -> Any:
        for payload in sorted(self._payloads, key=_priority_order):
            if payload._disabled.is_set() or not lets_through(payload._source, request):
                continue
            try:
                return await payload(request)
            except rendering.ReactionMismatchError:  # a mismatch or a depleted reaction
                payload._disabled.set()
            except NotImplementedError:  # matched, but with nothing to respond
                pass
        raise NotImplementedError(f"no kmock reaction matches {request}")


def _priority_order(payload: Any) -> tuple[float, ...]:
    # kmock pads priorities of mixed depth with zeros; eight levels is far deeper than any chain.
    priority = tuple(-p for p in payload.priorities)
    return priority + (0.0,) * (8 - len(priority))


class ApplyingEmulator(KubernetesEmulator, DirectMatching):  # type: ignore[misc]
    def _KubernetesEmulator__get_objs(self, request: rendering.Request, strict: bool) -> Any:
        # Overrides kmock's private linear scan (the name is how Python mangles ``__get_objs``).
        named = request.resource is not None and request.name is not None
        if named and (strict or request.namespace is not None):
            key = (request.resource, request.namespace, request.name)
            return [self._objects[key]] if key in self._objects else []
        return super()._KubernetesEmulator__get_objs(request, strict)

    async def _render_error(self, exc: Exception) -> Any:
        if isinstance(exc, k8s.KubernetesError) and not exc.details:
            status = {
                "apiVersion": "v1",
                "kind": "Status",
                "metadata": {},
                "code": exc.status,
                "status": "Failure",
                "reason": exc.reason or type(exc).__name__,
                "message": exc.message or repr(exc),
            }
            return aiohttp.web.json_response(status, status=exc.status)
        return await super()._render_error(exc)

    async def _handle(self, request: rendering.Request) -> Any:
        if (
            request.resource is not None
            and request.method == enums.method.PATCH
            and request.headers.get("Content-Type", "").startswith(APPLY)
            and request.name is not None
            and not request.url.path.endswith("/status")
        ):
            key = (request.resource, request.namespace, request.name)
            unchanged = False
            async with self._lock:
                if key not in self._objects or self._objects[key].deleted:
                    body = dict(request.data)
                    meta = dict(body.get("metadata", {}))
                    meta.setdefault("uid", str(uuid.uuid4()))
                    meta.setdefault("resourceVersion", str(next(_versions)))
                    meta.setdefault("generation", 1)
                    body["metadata"] = meta
                    if key in self._objects:
                        self._objects[key].create(body)
                    else:
                        self._objects[key] = body
                else:
                    unchanged = not merge_changes(self._objects[key].raw, request.data)
            if unchanged:
                # A real API server sends no watch event for an apply that changes nothing;
                # kmock would send a MODIFIED. Skip its state change, keep its reactions
                # (injected faults, the object as the response).
                return await super(KubernetesEmulator, self)._handle(request)
        return await super()._handle(request)


def merge_changes(current: Any, patch: Any) -> bool:
    """Whether merging ``patch`` (kmock's patch semantics) would change ``current``."""
    if not isinstance(patch, dict) or not isinstance(current, dict):
        return bool(current != patch)
    return any(
        key in current
        if value is None
        else key not in current or merge_changes(current[key], value)
        for key, value in patch.items()
    )


def model_deployment(name: str = "mnist", **spec: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "apiVersion": api.API_VERSION,
        "kind": api.KIND,
        "metadata": {
            "name": name,
            "namespace": NAMESPACE,
            "uid": str(uuid.uuid4()),
            "resourceVersion": "1",
            "generation": 1,
        },
        "spec": {
            "runtime": "onnxruntime",
            "model": {"uri": "s3://models/mnist/"},
            **spec,
        },
    }
    return body


def children(kmock: Any, name: str = "mnist") -> dict[str, dict[str, Any]]:
    """The live children of one ModelDeployment in kmock, by kind."""
    found = {}
    for kind in CHILD_KINDS:
        group_version = kind.api_version if "/" in kind.api_version else "v1"
        resource = f"{group_version}/{kind.plural}"
        key = (kmock.resource(resource), NAMESPACE, name)
        if key in kmock.objects and not kmock.objects[key].deleted:
            found[kind.kind] = copy.deepcopy(kmock.objects[key].raw)
    return found


async def eventually(check: Callable[[], Any], *, timeout: float = 20.0, step: float = 0.1) -> Any:
    """Poll ``check`` until truthy, with a bound (fake loop time under looptime)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        result = check()
        if result:
            return result
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"condition not met within {timeout}s: {check}")
        await asyncio.sleep(step)


class Api:
    """A plain HTTP client to kmock, as kubectl would be: changes produce watch events."""

    def __init__(self, base: str) -> None:
        self.base = base.rstrip("/")

    async def request(
        self, method: str, path: str, body: Any = None, ctype: str = "application/merge-patch+json"
    ) -> Any:
        headers = {"Connection": "close", "Content-Type": ctype}
        async with (
            aiohttp.ClientSession() as session,
            session.request(method, self.base + path, json=body, headers=headers) as response,
        ):
            text = await response.text()
            assert response.status < 400, (response.status, text)
            return await response.json() if text else None

    async def create_md(self, body: dict[str, Any]) -> Any:
        ns = body["metadata"]["namespace"]
        return await self.request(
            "POST", f"/apis/{api.API_VERSION}/namespaces/{ns}/{api.PLURAL}", body
        )


@contextlib.asynccontextmanager
async def running_operator(
    kmock: Any, config: OperatorConfig | None = None
) -> AsyncIterator[kopf.Memo]:
    """The real operator (kubeserve.handlers) as a task; stopped on exit."""
    import kubeserve.handlers  # noqa: F401  (registers the handlers)

    os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
    memo = kopf.Memo(
        connection=kopf.ConnectionInfo(server=str(kmock.url)),
        config=config or OperatorConfig(),
    )
    stop = asyncio.Event()
    ready = asyncio.Event()
    task = asyncio.create_task(
        kopf.operator(
            clusterwide=True, standalone=True, stop_flag=stop, ready_flag=ready, memo=memo
        )
    )
    await asyncio.wait_for(ready.wait(), timeout=10)
    try:
        yield memo
    finally:
        stop.set()
        await asyncio.wait_for(task, timeout=30)
