"""`kubeserve serve` with spec.canary: stable and canary side by side behind one port.

Both tracks run with the spec's runtime, each on its own internal port, exactly as
`kubeserve serve` runs one model (the canary is ``resources.canary.canary_view``: the stable
spec with the canary's model put in). A small reverse proxy in this process listens on the
announced port and splits the requests with the weights the Gateway would use:

- ``trafficPercent: p``: p % of the requests go to the canary, the rest to stable. The order is
  smooth weighted round-robin (nginx's), so it is deterministic: of every 100 requests exactly
  p reach the canary, spread out rather than in a burst.
- ``mirror: true``: every request goes to stable; p % of them (same round-robin) are also
  copied to the canary, whose answers are dropped.

Every proxied response carries ``X-Kubeserve-Track: stable|canary``. The proxy forwards the
method, path, query, headers (minus hop-by-hop ones) and body (read whole: the copy for the
mirror needs it), and streams the response back. Everything is split, /metrics and health
too, as behind a Gateway; each track's own URLs are announced for looking at one track.

Stopping: the front stops first and lets in-flight requests finish, then both tracks stop
with their usual drain.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from ...api import ModelDeployment
from ...resources.canary import CANARY, STABLE, canary_view, traffic_text
from ..errors import LocalError, first_line
from .net import url_host
from .options import LocalOptions

log = logging.getLogger(__name__)

TRACK_HEADER = "X-Kubeserve-Track"
# RFC 9110 section 7.6.1; plus Host (the client sets its own) and Content-Length (recomputed).
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)
CONNECT_TIMEOUT_S = 10.0
SHUTDOWN_TIMEOUT_S = 30.0  # in-flight requests through the front get this long on stop
MIRROR_LIMIT = 256  # mirrored copies in flight; more are dropped (the canary is falling behind)

Runner = Callable[[ModelDeployment, Path, LocalOptions, asyncio.Event], Awaitable[None]]
Resolve = Callable[[ModelDeployment, Path, asyncio.Event], Awaitable[Path]]


class SmoothWeightedRoundRobin:
    """nginx's smooth weighted round-robin: deterministic, and spreads the picks evenly.

    Each pick adds every weight to its track's running score, picks the highest score (the
    first on a tie) and takes the total off the winner. Over any ``sum(weights)`` consecutive
    picks each track is picked exactly its weight's number of times.
    """

    def __init__(self, weights: dict[str, int]) -> None:
        if any(weight < 0 for weight in weights.values()) or sum(weights.values()) <= 0:
            raise ValueError(f"weights must be >= 0 with a positive sum: {weights}")
        self.weights = dict(weights)
        self.total = sum(weights.values())
        self.current = dict.fromkeys(weights, 0)

    def pick(self) -> str:
        for track, weight in self.weights.items():
            self.current[track] += weight
        chosen = max(self.current, key=lambda track: self.current[track])
        self.current[chosen] -= self.total
        return chosen


def split(percent: int) -> SmoothWeightedRoundRobin:
    """The round-robin for a canary share: of requests (split) or of copies (mirror)."""
    percent = max(0, min(percent, 100))
    return SmoothWeightedRoundRobin({STABLE: 100 - percent, CANARY: percent})


def forwarded_headers(source: CIMultiDictProxy[str] | CIMultiDict[str]) -> CIMultiDict[str]:
    """``source`` without hop-by-hop ones (also those the Connection header names)."""
    named = {
        token.strip().lower()
        for value in source.getall("Connection", [])
        for token in value.split(",")
        if token.strip()
    }
    drop = HOP_BY_HOP | named | {"host", "content-length"}
    return CIMultiDict((key, value) for key, value in source.items() if key.lower() not in drop)


@dataclass
class Front:
    """The weighted reverse proxy on the announced port."""

    backends: dict[str, str]  # track -> origin, e.g. http://127.0.0.1:41001
    percent: int
    mirror: bool
    counts: dict[str, int] = field(default_factory=lambda: {STABLE: 0, CANARY: 0})

    def __post_init__(self) -> None:
        self.rr = split(self.percent)
        self.mirrors: set[asyncio.Task[None]] = set()
        self.session: aiohttp.ClientSession | None = None
        self.runner: web.AppRunner | None = None

    async def start(self, host: str, port: int) -> int:
        self.session = aiohttp.ClientSession(
            # Bytes pass through as they are: no decompression, no cookie jar.
            auto_decompress=False,
            cookie_jar=aiohttp.DummyCookieJar(),
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=CONNECT_TIMEOUT_S),
            connector=aiohttp.TCPConnector(limit=0),
        )
        app = web.Application(client_max_size=0)  # the backends judge sizes
        app.router.add_route("*", "/{tail:.*}", self.handle)
        self.runner = web.AppRunner(
            app, handle_signals=False, access_log=None, shutdown_timeout=SHUTDOWN_TIMEOUT_S
        )
        await self.runner.setup()
        site = web.TCPSite(self.runner, host, port)
        try:
            await site.start()
        except OSError as exc:
            await self.stop()
            raise LocalError(f"cannot listen on {host}:{port}: {first_line(exc)}") from exc
        return int(self.runner.addresses[0][1])

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()  # stops listening, lets in-flight requests finish
            self.runner = None
        for task in list(self.mirrors):
            task.cancel()
        if self.mirrors:
            await asyncio.gather(*self.mirrors, return_exceptions=True)
        if self.session is not None:
            await self.session.close()
            self.session = None

    async def handle(self, request: web.Request) -> web.StreamResponse:
        track = self.rr.pick()
        body = await request.read()
        headers = forwarded_headers(request.headers)
        if self.mirror:
            if track == CANARY:
                self._copy_to_canary(request, headers, body)
            track = STABLE
        self.counts[track] += 1
        return await self._forward(track, request, headers, body)

    def _url(self, track: str, request: web.Request) -> URL:
        return URL(self.backends[track] + request.raw_path, encoded=True)

    async def _forward(
        self, track: str, request: web.Request, headers: CIMultiDict[str], body: bytes
    ) -> web.StreamResponse:
        assert self.session is not None
        try:
            async with self.session.request(
                request.method,
                self._url(track, request),
                headers=headers,
                data=body,
                allow_redirects=False,
            ) as upstream:
                response = web.StreamResponse(status=upstream.status, reason=upstream.reason)
                for key, value in forwarded_headers(upstream.headers).items():
                    response.headers.add(key, value)
                response.headers[TRACK_HEADER] = track
                if upstream.content_length is not None:
                    response.content_length = upstream.content_length
                await response.prepare(request)
                async for chunk in upstream.content.iter_any():
                    await response.write(chunk)
                await response.write_eof()
                return response
        except (aiohttp.ClientError, TimeoutError) as exc:
            return web.Response(
                status=502,
                text=f"kubeserve serve: the {track} server did not answer: {first_line(exc)}\n",
                headers={TRACK_HEADER: track},
            )

    def _copy_to_canary(self, request: web.Request, headers: CIMultiDict[str], body: bytes) -> None:
        if len(self.mirrors) >= MIRROR_LIMIT:
            log.warning("dropping a mirrored request: %d copies in flight", len(self.mirrors))
            return
        task = asyncio.ensure_future(
            self._mirror_one(request.method, self._url(CANARY, request), headers, body)
        )
        self.mirrors.add(task)
        task.add_done_callback(self.mirrors.discard)

    async def _mirror_one(
        self, method: str, url: URL, headers: CIMultiDict[str], body: bytes
    ) -> None:
        assert self.session is not None
        self.counts["mirrored"] = self.counts.get("mirrored", 0) + 1
        try:
            async with self.session.request(
                method, url, headers=headers, data=body, allow_redirects=False
            ) as answer:
                await answer.read()  # dropped, as the Gateway's RequestMirror drops it
        except (aiohttp.ClientError, TimeoutError) as exc:
            log.info("mirrored request to the canary failed: %s", first_line(exc))


@dataclass
class Track:
    name: str
    md: ModelDeployment
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    url: str = ""
    extra: tuple[str, ...] = ()

    def on_serving(self, url: str, extra: tuple[str, ...]) -> None:
        self.url, self.extra = url, extra
        self.ready.set()


async def serve(
    md: ModelDeployment,
    opts: LocalOptions,
    stop: asyncio.Event,
    *,
    runner: Runner,
    resolve: Resolve,
) -> None:
    """Resolve both models, start both tracks, then the front; run until ``stop``."""
    canary = md.spec.canary
    assert canary is not None
    tracks = [Track(STABLE, md), Track(CANARY, canary_view(md))]
    model_dirs = []
    for track in tracks:
        work = opts.work_dir / track.name
        work.mkdir(parents=True, exist_ok=True)
        model_dirs.append(await resolve(track.md, work, stop))
        if stop.is_set():
            return
    # The tracks stop only after the front has drained, never on the signal itself.
    backend_stop = asyncio.Event()
    tasks: dict[str, asyncio.Future[None]] = {
        track.name: asyncio.ensure_future(
            runner(
                track.md,
                model_dir,
                replace(
                    opts,
                    port=0,
                    work_dir=opts.work_dir / track.name,
                    on_serving=track.on_serving,
                ),
                backend_stop,
            )
        )
        for track, model_dir in zip(tracks, model_dirs, strict=True)
    }
    front: Front | None = None
    try:
        if not await _all_ready(tracks, tasks, stop):
            return
        front = Front(
            backends={track.name: _origin(track.url) for track in tracks},
            percent=canary.traffic_percent,
            mirror=canary.mirror,
        )
        port = await front.start(opts.host, opts.port)
        _announce(md, tracks, f"http://{url_host(opts.host)}:{port}", canary.mirror, front.percent)
        await _until_stop_or_failure(tasks, stop)
        print(f"stopping {md.model_name} (stable and canary) ...", file=sys.stderr, flush=True)
    finally:
        if front is not None:
            await front.stop()
        backend_stop.set()
        results = await asyncio.gather(*tasks.values(), return_exceptions=True)
    for result in results:
        if isinstance(result, BaseException):
            raise result


async def _all_ready(
    tracks: list[Track], tasks: dict[str, asyncio.Future[None]], stop: asyncio.Event
) -> bool:
    """Wait until both tracks announce; False on ``stop``. A track that ends first fails."""
    readiness: set[asyncio.Future[Any]] = {
        asyncio.ensure_future(track.ready.wait()) for track in tracks
    }
    stopped: asyncio.Future[Any] = asyncio.ensure_future(stop.wait())
    try:
        while not all(track.ready.is_set() for track in tracks):
            await asyncio.wait(
                {*readiness, *tasks.values(), stopped}, return_when=asyncio.FIRST_COMPLETED
            )
            if stop.is_set():
                return False
            for name, task in tasks.items():
                if task.done():
                    _raise_named(name, task)
                    raise LocalError(f"the {name} server stopped before it was ready")
        return True
    finally:
        for waiter in (*readiness, stopped):
            waiter.cancel()


async def _until_stop_or_failure(
    tasks: dict[str, asyncio.Future[None]], stop: asyncio.Event
) -> None:
    stopped: asyncio.Future[Any] = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({*tasks.values(), stopped}, return_when=asyncio.FIRST_COMPLETED)
        for name, task in tasks.items():
            if task.done() and not stop.is_set():
                _raise_named(name, task)
                raise LocalError(f"the {name} server stopped unexpectedly")
    finally:
        stopped.cancel()


def _raise_named(track: str, task: asyncio.Future[None]) -> None:
    """Re-raise a finished track's error, saying which track it was."""
    try:
        task.result()
    except LocalError as exc:
        exc.args = (f"{track}: {exc}", *exc.args[1:])
        raise


def _origin(url: str) -> str:
    parsed = URL(url)
    return str(parsed.origin())


def _announce(
    md: ModelDeployment, tracks: list[Track], front: str, mirror: bool, percent: int
) -> None:
    stable = tracks[0]
    path = stable.url.removeprefix(_origin(stable.url))
    how = "copies, answers dropped" if mirror else "smooth weighted round-robin"
    lines = [
        f"serving {md.model_name} ({md.spec.runtime.value}) at {front}{path}",
        f"  split:   {traffic_text(percent, mirror=mirror)} ({how}; "
        f"each answer says which track: {TRACK_HEADER})",
    ]
    for track in tracks:
        lines.append(f"  {track.name}:  {track.url}  (model {track.md.spec.model.uri})")
        lines += [f"    {line}" for line in track.extra]
    lines.append("press Ctrl-C to stop")
    print("\n".join(lines), flush=True)


__all__ = ["TRACK_HEADER", "Front", "SmoothWeightedRoundRobin", "serve", "split"]
