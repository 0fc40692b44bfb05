"""Thin kopf handlers: adapt kopf's callbacks to ``reconcile`` and the status patch.

The memo carries the API client and the operator config, so tests can inject both.
"""

from __future__ import annotations

import logging
import os
import tempfile
from typing import Any

import kopf

from . import api, metrics
from .config import OperatorConfig
from .kube import ApiError, Credentials, KubeClient
from .reconcile import ReconcileResult, reconcile, status_from_deployment
from .resources.labels import MANAGED_BY, MANAGED_BY_LABEL
from .status import conditions_equal

logger = logging.getLogger(__name__)

MD = (api.GROUP, api.VERSION, api.PLURAL)
RESYNC_SECONDS = OperatorConfig.from_env().resync_seconds
# kopf's handler retries: bounded exponential backoff, never a hot loop.
RETRY_BACKOFF = 5.0
MAX_RETRY_DELAY = 300.0


@kopf.on.startup()
async def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    # Keep kopf's bookkeeping out of status, under our own annotation prefix.
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=api.GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=api.GROUP, key="last-handled-configuration"
    )
    settings.persistence.finalizer = f"{api.GROUP}/finalizer"
    settings.posting.level = logging.INFO
    settings.networking.error_backoffs = [1, 2, 5, 10, 30]
    if not hasattr(memo, "config"):
        memo.config = OperatorConfig.from_env()


@kopf.on.login()
async def login(memo: kopf.Memo, **kwargs: Any) -> kopf.ConnectionInfo | None:
    if getattr(memo, "connection", None) is not None:
        info: kopf.ConnectionInfo = memo.connection
    else:
        found = kopf.login_with_service_account(**kwargs) or kopf.login_with_kubeconfig(**kwargs)
        if found is None:
            return None
        info = found
        memo.connection = info
    if getattr(memo, "kube", None) is None:
        memo.kube = KubeClient(_credentials(info), refresh=lambda: _relogin(kwargs))
    return info


@kopf.on.cleanup()
async def close_client(memo: kopf.Memo, **_: Any) -> None:
    kube = getattr(memo, "kube", None)
    if kube is not None:
        await kube.close()


@kopf.on.resume(*MD)
@kopf.on.create(*MD)
@kopf.on.update(*MD)
@kopf.timer(*MD, interval=RESYNC_SECONDS, initial_delay=RESYNC_SECONDS, idle=0)
async def reconcile_handler(
    body: kopf.Body, patch: kopf.Patch, memo: kopf.Memo, retry: int = 0, **_: Any
) -> None:
    result = await _reconcile(body, memo, retry)
    _write_status(body, patch, result)


async def _reconcile(body: kopf.Body, memo: kopf.Memo, retry: int) -> ReconcileResult:
    try:
        with metrics.RECONCILE_SECONDS.time():
            result = await reconcile(body, memo.kube, memo.config)
    except ApiError as exc:
        metrics.RECONCILES.labels("error").inc()
        metrics.RECONCILE_ERRORS.labels(f"http_{exc.status}" if exc.status else "connection").inc()
        if exc.transient:
            delay = min(RETRY_BACKOFF * 2**retry, MAX_RETRY_DELAY)
            raise kopf.TemporaryError(f"API unavailable, retrying: {exc}", delay=delay) from exc
        raise
    metrics.RECONCILES.labels("ok").inc()
    for _kind, reason, _message in result.events:
        if _kind == "Warning":
            metrics.RECONCILE_ERRORS.labels(reason).inc()
    return result


def _write_status(body: kopf.Body, patch: kopf.Patch, result: ReconcileResult) -> None:
    old = dict(body.get("status") or {})
    ready = next(c for c in result.status["conditions"] if c["type"] == "Ready")
    metrics.READY.labels(body["metadata"].get("namespace", ""), body["metadata"]["name"]).set(
        1 if ready["status"] == "True" else 0
    )
    if (
        not _status_changed(old, result.status)
        and old.get("observedGeneration") == result.status["observedGeneration"]
    ):
        return
    for key, value in result.status.items():
        patch.status[key] = value
    if not conditions_equal(old.get("conditions", []), result.status.get("conditions", [])):
        for kind, reason, message in result.events:
            kopf.event(body, type=kind, reason=reason, message=message)
        kopf.event(
            body,
            type="Normal" if ready["status"] == "True" else "Warning",
            reason=f"Ready{ready['status']}",
            message=f"{ready['reason']}: {ready['message']}",
        )


@kopf.on.event("apps", "v1", "deployments", labels={MANAGED_BY_LABEL: MANAGED_BY})
async def child_deployment_changed(
    body: kopf.Body, type: str | None, memo: kopf.Memo, **_: Any
) -> None:
    """Readiness lives on the Deployment: re-reconcile its owner when it changes."""
    owner = next(
        (
            ref
            for ref in body.get("metadata", {}).get("ownerReferences", [])
            if ref.get("kind") == api.KIND and ref.get("apiVersion") == api.API_VERSION
        ),
        None,
    )
    if owner is None or type is None:
        return
    kube: KubeClient = memo.kube
    namespace = body["metadata"]["namespace"]
    md = await kube.get(api.API_VERSION, api.PLURAL, namespace, owner["name"])
    if md is None or md["metadata"].get("uid") != owner.get("uid"):
        return
    status = status_from_deployment(md, body, memo.config)
    if status is None or not _status_changed(md.get("status") or {}, status):
        return
    await kube.patch_status(api.API_VERSION, api.PLURAL, namespace, owner["name"], status)


def _status_changed(old: dict[str, Any], new: dict[str, Any]) -> bool:
    if not conditions_equal(old.get("conditions", []), new.get("conditions", [])):
        return True
    return any(old.get(key) != new.get(key) for key in ("replicas", "readyReplicas", "url"))


def _credentials(info: kopf.ConnectionInfo) -> Credentials:
    return Credentials(
        server=info.server,
        token=info.token,
        ca_path=_as_file(info.ca_path, info.ca_data),
        insecure=bool(info.insecure),
        certificate_path=_as_file(info.certificate_path, info.certificate_data),
        private_key_path=_as_file(info.private_key_path, info.private_key_data),
    )


def _as_file(path: Any, data: Any) -> str | None:
    """ssl wants files; kubeconfigs often embed the PEM data instead."""
    if path:
        return os.fsdecode(path)
    if not data:
        return None
    handle, name = tempfile.mkstemp(prefix="kubeserve-", suffix=".pem")
    with os.fdopen(handle, "wb") as out:
        out.write(data if isinstance(data, bytes) else str(data).encode())
    return name


async def _relogin(kwargs: dict[str, Any]) -> Credentials:
    info = kopf.login_with_service_account(**kwargs) or kopf.login_with_kubeconfig(**kwargs)
    if info is None:
        raise RuntimeError("no Kubernetes credentials found")
    return _credentials(info)
