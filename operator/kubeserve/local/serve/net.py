"""Ports and HTTP checks for local servers."""

from __future__ import annotations

import contextlib
import socket
from typing import Any

import aiohttp

CHECK_TIMEOUT_S = 2.0


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on now. Another process may take it before the server binds;
    servers that can bind port 0 themselves (our ONNX server) avoid the race."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def is_free(port: int, host: str = "127.0.0.1") -> bool:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def url_host(host: str) -> str:
    """The host part of a URL for a bind address (0.0.0.0 is reachable as 127.0.0.1)."""
    if host in ("0.0.0.0", ""):
        return "127.0.0.1"
    if host == "::":
        return "[::1]"
    return f"[{host}]" if ":" in host else host


async def get_json(session: aiohttp.ClientSession, url: str) -> Any | None:
    """The JSON body of a 200 answer; None for anything else, including no answer yet."""
    with contextlib.suppress(aiohttp.ClientError, TimeoutError, ValueError):
        async with session.get(url, timeout=aiohttp.ClientTimeout(total=CHECK_TIMEOUT_S)) as resp:
            if resp.status == 200:
                return await resp.json(content_type=None)
    return None
