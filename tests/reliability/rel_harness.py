"""Fault injection, kills and bookkeeping on top of the integration harness.

``FaultyEmulator`` is tests/integration's ApplyingEmulator (kmock that creates objects on
server-side apply) with three additions:

* faults: rules that answer a matching request with an HTTP error (409, 429 with a
  Retry-After header, 500, 503, ...) or hang it past the client's timeout, *before* kmock
  touches its state, as a real API server that refuses a request does. (kmock's own DSL
  reactions, ``kmock[...] << 503``, answer after kmock has already stored the change: that
  is the "committed, but the response was lost" case; test_faults uses both.)
* hooks: coroutines run on every request (the restart test uses one to kill the operator
  at the N-th request);
* counters: which objects were created, by whom, and every request by client.

``OperatorRun`` starts the real operator (kubeserve.handlers) as a task in the test's loop,
cluster-wide or namespaced, and can stop it gracefully or kill it: cancel every task it
started, as if the process had died.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import copy
import gc
import os
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import aiohttp.web
import kopf
from kmock._internal import enums, rendering
from kmock_harness import MD_RESOURCE, NAMESPACE, ApplyingEmulator

from kubeserve import api
from kubeserve.config import OperatorConfig
from kubeserve.render import render
from kubeserve.resources.kinds import CHILD_KINDS

OPERATOR_UA = "kubeserve"  # KubeClient's User-Agent; kopf's is kopf/<version>
Hook = Callable[[rendering.Request], Awaitable[None]]


@dataclass
class Fault:
    """Answer requests matching ``method`` and ``path`` (a regex) with ``status``.

    ``status`` 0 hangs the request for ``hang`` seconds (fake time under looptime) so the
    client times out. ``times`` None: forever. ``client``: "kubeserve", "kopf" or None (any).
    """

    method: str | None
    path: str
    status: int
    times: int | None = 1
    retry_after: float | None = None
    hang: float = 120.0
    client: str | None = OPERATOR_UA
    params: dict[str, str] | None = None
    hits: int = 0

    def matches(self, request: rendering.Request) -> bool:
        if self.times is not None and self.hits >= self.times:
            return False
        if self.method is not None and request.method.value != self.method:
            return False
        if self.client is not None and not user_agent(request).startswith(self.client):
            return False
        if self.params is not None and any(
            request.params.get(k) != v for k, v in self.params.items()
        ):
            return False
        return re.search(self.path, request.url.path) is not None


def user_agent(request: rendering.Request) -> str:
    return str(request.headers.get("User-Agent", ""))


class FaultyEmulator(ApplyingEmulator):  # type: ignore[misc]
    """ApplyingEmulator + faults answered before any state change + hooks + counters."""

    def __repr__(self) -> str:
        # attrs' repr walks every request and object: pytest's assertion rewriting would
        # render it for a failing assert and run out of memory.
        return f"<FaultyEmulator {len(self._requests)} requests, {len(self._objects)} objects>"

    @property
    def state(self) -> dict[str, Any]:
        if "_rel_state" not in self.__dict__:
            self.__dict__["_rel_state"] = {
                "faults": [],
                "hooks": [],
                "injected": [],
                "created": collections.Counter(),
            }
        return self.__dict__["_rel_state"]  # type: ignore[no-any-return]

    @property
    def faults(self) -> list[Fault]:
        return self.state["faults"]  # type: ignore[no-any-return]

    @property
    def hooks(self) -> list[Hook]:
        return self.state["hooks"]  # type: ignore[no-any-return]

    @property
    def injected(self) -> list[tuple[rendering.Request, Fault]]:
        return self.state["injected"]  # type: ignore[no-any-return]

    @property
    def created(self) -> collections.Counter[tuple[str, str | None, str]]:
        return self.state["created"]  # type: ignore[no-any-return]

    def inject(self, *faults: Fault) -> None:
        self.faults.extend(faults)

    async def _handle(self, request: rendering.Request) -> Any:
        for hook in list(self.hooks):
            await hook(request)
        for fault in self.faults:
            if fault.matches(request):
                fault.hits += 1
                self.injected.append((request, fault))
                return await self._answer(fault)
        self._count_creation(request)
        return await super()._handle(request)

    async def _answer(self, fault: Fault) -> aiohttp.web.StreamResponse:
        if fault.status == 0:
            await asyncio.sleep(fault.hang)
            return aiohttp.web.Response(status=504)
        headers = {}
        if fault.retry_after is not None:
            headers["Retry-After"] = f"{fault.retry_after:g}"
        return aiohttp.web.json_response(
            {
                "apiVersion": "v1",
                "kind": "Status",
                "status": "Failure",
                "code": fault.status,
                "reason": "Injected",
                "message": f"injected fault {fault.status}",
            },
            status=fault.status,
            headers=headers,
        )

    def _count_creation(self, request: rendering.Request) -> None:
        if request.resource is None or (request.name is None and request.method.value != "POST"):
            return
        name = request.name or (request.data or {}).get("metadata", {}).get("name")
        key = (request.resource, request.namespace, name)
        creating = request.method.value == "POST" or (
            request.method.value == "PATCH"
            and "apply-patch" in request.headers.get("Content-Type", "")
            and not request.url.path.endswith("/status")
        )
        if creating and (key not in self._objects or self._objects[key].deleted):
            self.created[(str(request.resource.plural), request.namespace, str(name))] += 1


# --- the operator ----------------------------------------------------------------------------


@dataclass
class OperatorRun:
    memo: kopf.Memo
    task: asyncio.Task[Any]
    stop: asyncio.Event
    before: set[asyncio.Task[Any]] = field(default_factory=set)

    async def kill(self) -> None:
        """Die like a killed process: every task we started is cancelled, nothing cleans up."""
        current = asyncio.current_task()
        ours = [t for t in asyncio.all_tasks() if t not in self.before and t is not current]
        for task in ours:
            task.cancel()
        for task in ours:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        # Only so the test leaves no open sockets behind (a dead process has none): our
        # client's session, and kopf's, which nothing closes after a cancellation.
        kube = getattr(self.memo, "kube", None)
        if kube is not None:
            await kube.close()
        for obj in gc.get_objects():
            if (
                isinstance(obj, aiohttp.ClientSession)
                and not obj.closed
                and str(obj.headers.get("User-Agent", "")).startswith("kopf/")
            ):
                await obj.close()

    async def graceful(self) -> None:
        self.stop.set()
        await asyncio.wait_for(self.task, timeout=30)


async def start_operator(
    kmock: Any,
    config: OperatorConfig | None = None,
    *,
    namespaces: Iterable[str] | None = None,
) -> OperatorRun:
    import kubeserve.handlers  # noqa: F401  (registers the handlers)

    os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
    before = set(asyncio.all_tasks())
    memo = kopf.Memo(
        connection=kopf.ConnectionInfo(server=str(kmock.url)),
        config=config or OperatorConfig(),
        namespaces=list(namespaces or []),
    )
    settings = kopf.OperatorSettings()
    # When its root task is cancelled without the stop flag (our kill(), or kopf giving up on
    # a watch), kopf SIGKILLs the whole process after this timeout: in a pod, the restart.
    # Here that would kill pytest; the tests kill and restart the operator themselves.
    settings.process.ultimate_exiting_timeout = None
    stop, ready = asyncio.Event(), asyncio.Event()
    if namespaces is not None:
        # kmock answers 500 on the namespace list that kopf's scanning needs (KMOCK.md).
        settings.scanning.disabled = True
        coro = kopf.operator(
            clusterwide=False,
            namespaces=list(namespaces),
            standalone=True,
            stop_flag=stop,
            ready_flag=ready,
            memo=memo,
            settings=settings,
        )
    else:
        coro = kopf.operator(
            clusterwide=True,
            standalone=True,
            stop_flag=stop,
            ready_flag=ready,
            memo=memo,
            settings=settings,
        )
    task = asyncio.create_task(coro)
    await asyncio.wait_for(ready.wait(), timeout=10)
    return OperatorRun(memo, task, stop, before)


@contextlib.asynccontextmanager
async def operator(
    kmock: Any, config: OperatorConfig | None = None, **kwargs: Any
) -> AsyncIterator[OperatorRun]:
    run = await start_operator(kmock, config, **kwargs)
    try:
        yield run
    finally:
        if not run.task.done():
            await run.graceful()


# --- what the cluster holds ------------------------------------------------------------------

CHILD_PLURALS = {kind.plural for kind in CHILD_KINDS}


def resource_of(kmock: Any, api_version: str, plural: str) -> Any:
    group_version = api_version if "/" in api_version else "v1"
    return kmock.resource(f"{group_version}/{plural}")


def live(kmock: Any, namespace: str = NAMESPACE) -> dict[tuple[str, str], dict[str, Any]]:
    """Every live object of a child kind in ``namespace``: (kind, name) -> body."""
    found = {}
    for kind in CHILD_KINDS:
        resource = resource_of(kmock, kind.api_version, kind.plural)
        for (res, ns, name), obj in list(kmock.objects.items()):
            if res == resource and ns == namespace and not obj.deleted:
                found[(kind.kind, name)] = copy.deepcopy(obj.raw)
    return found


def md_object(kmock: Any, name: str = "mnist", namespace: str = NAMESPACE) -> dict[str, Any]:
    key = (kmock.resource(MD_RESOURCE), namespace, name)
    return copy.deepcopy(dict(kmock.objects[key].raw))


def condition(md: dict[str, Any], kind: str) -> dict[str, Any] | None:
    return next(
        (c for c in (md.get("status") or {}).get("conditions", []) if c["type"] == kind), None
    )


def contains(live_obj: Any, desired: Any) -> bool:
    """``desired`` is a subset of ``live_obj`` (kmock merges patches, so extra keys remain)."""
    if isinstance(desired, dict):
        return isinstance(live_obj, dict) and all(
            k in live_obj and contains(live_obj[k], v) for k, v in desired.items()
        )
    if isinstance(desired, list):
        return (
            isinstance(live_obj, list)
            and len(live_obj) == len(desired)
            and all(contains(a, b) for a, b in zip(live_obj, desired, strict=True))
        )
    return bool(live_obj == desired)


def desired_children(md_body: dict[str, Any], config: OperatorConfig | None = None) -> list[Any]:
    return render(api.ModelDeployment.parse(md_body), config or OperatorConfig())


def converged(
    kmock: Any,
    md_body: dict[str, Any],
    *,
    config: OperatorConfig | None = None,
    namespace: str = NAMESPACE,
) -> bool:
    """Exactly the desired children exist, each as rendered, and the status is current."""
    desired = {(c["kind"], c["metadata"]["name"]): c for c in desired_children(md_body, config)}
    uid = md_body["metadata"].get("uid")
    names = {name for _, name in desired}
    # Ours, or in our way; objects of other names that nobody gave us are not our business.
    found = {
        key: obj
        for key, obj in live(kmock, namespace).items()
        if key[1] in names
        or any(ref.get("uid") == uid for ref in obj["metadata"].get("ownerReferences", []))
    }
    if set(found) != set(desired):
        return False
    if not all(contains(found[key], obj) for key, obj in desired.items()):
        return False
    md = md_object(kmock, md_body["metadata"]["name"], namespace)
    ready = condition(md, "Ready")
    generation = md["metadata"].get("generation")
    return bool(
        ready is not None and (md.get("status") or {}).get("observedGeneration") == generation
    )


def requests_by(kmock: Any, client: str = OPERATOR_UA) -> list[rendering.Request]:
    return [r for r in list(kmock) if user_agent(r).startswith(client)]


def is_apply(request: rendering.Request) -> bool:
    return request.method == enums.method.PATCH and "apply-patch" in request.headers.get(
        "Content-Type", ""
    )
