"""CLI: python -m kubeserve.dataplane.storage URI DEST [--runtime R] [--model-name NAME]

Exit codes: 0 ok, 2 usage / invalid URI / unusable DEST, 3 download failure, 4 layout or
archive failure, 1 unexpected error. Failures print one line on stderr.
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

from . import archive, credentials, fetch, layout
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
    return parser


def _on_sigterm(signum: int, _frame: FrameType | None) -> None:
    # Unwind normally so the staging directory is removed and DEST stays untouched.
    raise SystemExit(128 + signum)


def run(args: argparse.Namespace, scrubber: Scrubber) -> int:
    started = time.monotonic()
    # The raw URI may carry a presigned query: scrub the query as a secret too.
    if "?" in args.uri:
        scrubber.add(args.uri.split("?", 1)[1].split("#", 1)[0])
    model = uris.parse(args.uri)
    creds = credentials.load()
    scrubber.add(*creds.secret_values())
    dest = args.dest.absolute()
    log.info(
        "model %s -> %s (runtime %s; credentials: %s)",
        model.redacted,
        dest,
        args.runtime or "any",
        creds.describe(),
    )

    if fetch.prepare(dest, model.redacted):
        log.info("%s already holds %s; nothing to do", dest, model.redacted)
        return 0
    fs = fetch.filesystem(model, creds)
    with fetch.staging_dir(dest) as staging:
        fetched = fetch.download(fs, model, staging)
        downloaded = time.monotonic()
        log.info(
            "downloaded %d file(s), %d bytes in %.2f s",
            fetched.files,
            fetched.bytes,
            downloaded - started,
        )
        if fetched.single is not None and archive.is_archive(fetched.single.name):
            written = archive.unpack(fetched.single, staging)
            fetched.single.unlink()
            log.info("unpacked %s: %d bytes", fetched.single.name, written)
        reserved = [p.name for p in staging.iterdir() if p.name.startswith(layout.INTERNAL_PREFIX)]
        if reserved:
            raise LayoutError(f"the model contains reserved names: {', '.join(reserved)}")
        if args.runtime:
            layout.check(staging, args.runtime, args.model_name)
        seconds = round(time.monotonic() - started, 3)
        fetch.commit(
            staging, dest, {"uri": model.redacted, "bytes": fetched.bytes, "seconds": seconds}
        )
    log.info("model ready in %s: %d bytes in %.2f s", dest, fetched.bytes, seconds)
    return 0


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
        return run(args, scrubber)
    except StorageError as exc:
        print(f"{PROG}: error: {scrubber.scrub(str(exc))}", file=sys.stderr)
        return exc.exit_code
    except Exception as exc:  # a bug: still one scrubbed line, no traceback with secrets
        print(
            f"{PROG}: unexpected error: {type(exc).__name__}: {scrubber.scrub(str(exc))}",
            file=sys.stderr,
        )
        return 1


if __name__ == "__main__":
    sys.exit(main())
