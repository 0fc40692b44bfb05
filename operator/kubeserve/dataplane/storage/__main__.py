"""CLI: python -m kubeserve.dataplane.storage URI DEST [--runtime R] [--model-name NAME]
       [--cache-dir DIR [--cache-max-size SIZE]]

Exit codes: 0 ok, 2 usage / invalid URI / unusable DEST, 3 download failure, 4 layout or
archive failure, 1 unexpected error. Failures print one line on stderr. On success the
termination message file gets a one-line JSON report (``report``: timing, size, cache use).
Logs go to stderr and never contain a secret value or a URI's query string: every record and
the final error line pass through a scrubber that knows the secrets in use.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from types import FrameType
from typing import Any

from . import archive, cache, credentials, fetch, layout, report
from . import uri as uris
from .errors import LayoutError, StorageError

log = logging.getLogger("kubeserve.storage")
PROG = "kubeserve-storage"


class Scrubber(logging.Formatter):
    """Formats records, then removes secret values and the URI's query string."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")
        self.secrets: list[str] = []

    def add(self, *values: str) -> None:
        # Longest first, so a secret containing another is replaced whole.
        self.secrets = sorted({*self.secrets, *(v for v in values if v)}, key=len, reverse=True)

    def scrub(self, text: str) -> str:
        for secret in self.secrets:
            text = text.replace(secret, "***")
        return text

    def format(self, record: logging.LogRecord) -> str:
        return self.scrub(super().format(record))


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Fetch a model into DEST (atomically), unpack archives, check the layout.",
    )
    parser.add_argument("uri", metavar="URI", help="s3://, gs://, https://, file:// or a path")
    parser.add_argument("dest", metavar="DEST", type=Path, help="the model directory to fill")
    parser.add_argument("--runtime", choices=layout.RUNTIMES, help="check this runtime's layout")
    parser.add_argument("--model-name", help="the name the server exposes (torchserve: NAME.mar)")
    parser.add_argument(
        "--cache-dir",
        type=Path,
        help="a model cache shared by initializers (a mounted volume); default: no cache",
    )
    parser.add_argument(
        "--cache-max-size",
        type=_size,
        default="50Gi",
        help="evict least recently used cache entries beyond this size (default 50Gi)",
    )
    return parser


def _size(text: str) -> int:
    try:
        return cache.parse_size(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _on_sigterm(signum: int, _frame: FrameType | None) -> None:
    # Unwind normally so the staging directory is removed and DEST stays untouched.
    raise SystemExit(128 + signum)


def run(args: argparse.Namespace, scrubber: Scrubber) -> str:
    """Fill DEST; return the termination report (see ``report``)."""
    started = time.monotonic()
    # The raw URI may carry a presigned query: scrub the query as a secret too.
    if "?" in args.uri:
        scrubber.add(args.uri.split("?", 1)[1].split("#", 1)[0])
    model = uris.parse(args.uri)
    creds = credentials.load()
    scrubber.add(*creds.secret_values())
    dest = args.dest.absolute()
    log.info(
        "model %s -> %s (runtime %s; credentials: %s; cache: %s)",
        model.redacted,
        dest,
        args.runtime or "any",
        creds.describe(),
        args.cache_dir or "off",
    )

    if fetch.prepare(dest, model.redacted):
        log.info("%s already holds %s; nothing to do", dest, model.redacted)
        return report.format_report(0.0, fetch.recorded_bytes(dest), report.CACHE_PRESENT)
    fs = fetch.filesystem(model, creds)
    with fetch.staging_dir(dest) as staging:
        if args.cache_dir is None:
            size, state = _fetch_model(fs, model, staging, started), report.CACHE_OFF
        else:
            size, state = _through_cache(fs, model, staging, args, started)
        if args.runtime:
            layout.check(staging, args.runtime, args.model_name)
        seconds = round(time.monotonic() - started, 3)
        fetch.commit(staging, dest, {"uri": model.redacted, "bytes": size, "seconds": seconds})
    log.info("model ready in %s: %d bytes in %.2f s (cache: %s)", dest, size, seconds, state)
    return report.format_report(seconds, size, state)


def _fetch_model(fs: Any, model: uris.ModelUri, target: Path, started: float) -> int:
    """Download into ``target`` and unpack an archive; return the model's size in bytes."""
    fetched = fetch.download(fs, model, target)
    log.info(
        "downloaded %d file(s), %d bytes in %.2f s",
        fetched.files,
        fetched.bytes,
        time.monotonic() - started,
    )
    size = fetched.bytes
    if fetched.single is not None and archive.is_archive(fetched.single.name):
        size = archive.unpack(fetched.single, target)
        fetched.single.unlink()
        log.info("unpacked %s: %d bytes", fetched.single.name, size)
    reserved = [p.name for p in target.iterdir() if p.name.startswith(layout.INTERNAL_PREFIX)]
    if reserved:
        raise LayoutError(f"the model contains reserved names: {', '.join(reserved)}")
    return size


def _through_cache(
    fs: Any, model: uris.ModelUri, staging: Path, args: argparse.Namespace, started: float
) -> tuple[int, str]:
    """Copy the model from the cache into ``staging``, filling the cache first on a miss.

    The cache only ever saves a download: whenever it cannot be used, the model is fetched
    as without it.
    """
    version = fetch.content_version(fs, model)
    if version is None:
        log.warning("%s reports no content version (ETag): not cached", model.redacted)
        return _fetch_model(fs, model, staging, started), report.CACHE_MISS
    if version.bytes > args.cache_max_size:
        log.warning(
            "%s (%d bytes) is bigger than the cache (%d bytes): not cached",
            model.redacted,
            version.bytes,
            args.cache_max_size,
        )
        return _fetch_model(fs, model, staging, started), report.CACHE_MISS
    base_uri = model.redacted.split("?", 1)[0]
    store = cache.Cache(args.cache_dir, args.cache_max_size)
    name = cache.key(base_uri, version.tag)
    meta = {"uri": base_uri, "version": version.tag}
    try:
        with store.entry(
            name, lambda d: _fetch_model(fs, model, d, started), meta, version.bytes
        ) as entry:
            try:
                cache.copy_tree(entry.path, staging)
            except OSError as exc:
                raise StorageError(f"cannot copy the model out of the cache: {exc}") from exc
    except cache.CacheUnavailable as exc:
        log.warning("model cache unavailable (%s); downloading without it", exc)
        return _fetch_model(fs, model, staging, started), report.CACHE_MISS
    if entry.hit:
        log.info("cache hit %s: %d bytes copied, nothing downloaded", name, entry.bytes)
        return entry.bytes, report.CACHE_HIT
    if entry.cached:
        log.info("cache miss %s: filled with %d bytes", name, entry.bytes)
    return entry.bytes, report.CACHE_MISS


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)  # exits 2 on usage errors
    scrubber = Scrubber()
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(scrubber)
    logging.basicConfig(level=logging.INFO, handlers=[handler], force=True)
    for noisy in ("botocore", "aiobotocore", "s3fs", "gcsfs", "fsspec", "aiohttp", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        message = run(args, scrubber)
    except StorageError as exc:
        print(f"{PROG}: error: {scrubber.scrub(str(exc))}", file=sys.stderr)
        return exc.exit_code
    except Exception as exc:  # a bug: still one scrubbed line, no traceback with secrets
        print(
            f"{PROG}: unexpected error: {type(exc).__name__}: {scrubber.scrub(str(exc))}",
            file=sys.stderr,
        )
        return 1
    # Read by the operator from the pod's status: no API credentials needed in the pod.
    report.write_report(message)
    return 0


if __name__ == "__main__":
    sys.exit(main())
