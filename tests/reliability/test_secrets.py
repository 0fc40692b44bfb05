"""Credentials never leak: not into logs (JSON, DEBUG, everything), status, events, or any
object the operator writes; they reach the pod only by reference (a Secret volume mounted
into the storage initializer, or secretKeyRef).

The Secret's values are unique tokens. The operator never needs to read the Secret, so the
strongest check holds too: it never requests it.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import logging
import uuid
from collections.abc import Iterator

import pytest
from kmock_harness import NAMESPACE, Api, eventually, model_deployment
from rel_harness import (
    FaultyEmulator,
    condition,
    converged,
    live,
    md_object,
    operator,
    requests_by,
    resource_of,
)

from kubeserve.config import OperatorConfig
from kubeserve.operator_main import JsonFormatter

pytestmark = [pytest.mark.kmock(cls=FaultyEmulator), pytest.mark.looptime]

CONFIG = OperatorConfig()


@pytest.fixture
def json_logs() -> Iterator[io.StringIO]:
    """Every log record of the process, DEBUG and up, as the operator's JSON lines."""
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(JsonFormatter())
    handler.setLevel(logging.DEBUG)
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        yield out
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)


def forms(token: str) -> list[str]:
    """The token as it could appear: plain, base64 (Secret data), JSON-escaped."""
    return [token, base64.b64encode(token.encode()).decode(), json.dumps(token)[1:-1]]


def leaks(text: str, token: str) -> list[str]:
    return [form for form in forms(token) if form in text]


async def test_secret_values_appear_nowhere(
    cluster: FaultyEmulator, json_logs: io.StringIO
) -> None:
    key_id, secret_key = f"AKIA{uuid.uuid4().hex[:16].upper()}", f"tok-{uuid.uuid4().hex}"
    secrets = resource_of(cluster, "v1", "secrets")
    cluster.objects[secrets, NAMESPACE, "s3-creds"] = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "s3-creds", "namespace": NAMESPACE, "uid": "s1"},
        "data": {
            "AWS_ACCESS_KEY_ID": base64.b64encode(key_id.encode()).decode(),
            "AWS_SECRET_ACCESS_KEY": base64.b64encode(secret_key.encode()).decode(),
        },
    }
    body = model_deployment(
        replicas=2,
        model={"uri": "s3://models/mnist/", "credentialsSecret": "s3-creds"},
        env=[
            {
                "name": "HF_TOKEN",
                "valueFrom": {"secretKeyRef": {"name": "s3-creds", "key": "AWS_SECRET_ACCESS_KEY"}},
            }
        ],
    )
    async with operator(cluster, CONFIG):
        await Api(str(cluster.url)).create_md(body)
        await eventually(lambda: converged(cluster, body), timeout=30)
        await asyncio.sleep(2 * CONFIG.resync_seconds)

    logs = json_logs.getvalue()
    assert len(logs.splitlines()) > 50, "DEBUG logging was captured"
    written = [r.text for r in requests_by(cluster) if r.method.value in ("PATCH", "POST", "PUT")]
    status = json.dumps(md_object(cluster).get("status"))
    children = json.dumps(list(live(cluster).values()))
    events = [r.text for r in requests_by(cluster) if r.url.path.endswith("/events")]
    assert events or written, "something was written to scan"
    for token in (key_id, secret_key):
        assert leaks(logs, token) == [], "logs"
        assert leaks(status, token) == [], "status"
        assert leaks(children, token) == [], "children"
        assert leaks("\n".join(written), token) == [], "request bodies"
    assert not [r for r in requests_by(cluster) if "/secrets" in r.url.path], (
        "the operator never reads Secrets"
    )

    pod = live(cluster)[("Deployment", "mnist")]["spec"]["template"]["spec"]
    volume = next(v for v in pod["volumes"] if "secret" in v)
    assert volume["secret"]["secretName"] == "s3-creds"
    init = next(c for c in pod["initContainers"] if c["name"] == "storage-initializer")
    mount = next(m for m in init["volumeMounts"] if m["name"] == volume["name"])
    assert mount["readOnly"] is True
    server = pod["containers"][0]
    assert all(m["name"] != volume["name"] for m in server["volumeMounts"]), (
        "only the initializer sees the storage credentials"
    )
    for container in [*pod["initContainers"], *pod["containers"]]:
        for var in container.get("env", []):
            if "valueFrom" in var:
                assert set(var["valueFrom"]) <= {
                    "secretKeyRef",
                    "configMapKeyRef",
                    "fieldRef",
                    "resourceFieldRef",
                }
            else:
                assert "s3-creds" not in json.dumps(var)


async def test_credentials_in_the_uri_are_refused_without_echoing_them(
    cluster: FaultyEmulator, json_logs: io.StringIO
) -> None:
    """The CRD's CEL rule refuses this at kubectl apply; if it gets in anyway (CRD not
    updated, kmock has no CEL), the operator refuses it and never repeats the secret."""
    password = f"pw-{uuid.uuid4().hex}"
    body = model_deployment(model={"uri": f"https://user:{password}@models.example/m.onnx"})
    async with operator(cluster, CONFIG):
        await Api(str(cluster.url)).create_md(body)
        ready = await eventually(
            lambda: (
                (c := condition(md_object(cluster), "Ready")) and c["reason"] == "InvalidSpec" and c
            ),
            timeout=30,
        )
        await asyncio.sleep(5)
    assert "credentialsSecret" in ready["message"], "the message says what to do instead"
    ours = "\n".join(
        line for line in json_logs.getvalue().splitlines() if '"logger": "kubeserve' in line
    )
    assert leaks(ours, password) == [], "our own log lines"
    assert leaks(json.dumps(md_object(cluster).get("status")), password) == []
    events = "\n".join(r.text for r in requests_by(cluster) if r.url.path.endswith("/events"))
    assert leaks(events, password) == []
    assert live(cluster) == {}, "nothing was applied"
