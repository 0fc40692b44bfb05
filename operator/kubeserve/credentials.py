"""How the operator logs in: the pod's service account, or any kubeconfig kubectl accepts.

The official ``kubernetes`` client reads the credentials: the in-cluster service account
(its projected token is re-read at each login), or a kubeconfig with embedded data, file
paths, a token or an exec credential plugin (EKS, GKE, OIDC). kopf's ``login_via_client``
turns what it loaded into a ``kopf.ConnectionInfo``.

Every call logs in afresh. kopf asks again after a 401; an answer cached from the first
login would hand back the very token the API server just rejected, and kopf would stop
with "Ran out of valid credentials".
"""

from __future__ import annotations

import asyncio
from typing import Any

import kopf


async def login(**kwargs: Any) -> kopf.ConnectionInfo:
    # In a thread: an exec plugin is a subprocess, and reading files blocks too.
    info = await asyncio.to_thread(lambda: kopf.login_via_client(**kwargs))
    if info is None:  # only when the kubernetes package is missing
        raise kopf.LoginError("no Kubernetes credentials: the kubernetes package is missing")
    return info
