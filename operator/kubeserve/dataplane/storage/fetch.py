"""Download a model through fsspec into a staging directory, then commit it into DEST.

Sources: s3 (s3fs), gs (gcsfs), http/https (fsspec's aiohttp implementation) and local files.
A URI names one object (a model file, a .mar, an archive) or, for s3/gs/file, a prefix or
directory whose files are all copied. An http(s) URI always names one file (HTTP has no
listing); ship several files as an archive.

Atomicity: everything is written to a staging directory first, so a failed or killed download
never leaves a partial model where the server looks.

- DEST does not exist: the staging directory is a sibling of DEST (same filesystem) and is
  renamed to DEST in one ``rename(2)``: all or nothing.
- DEST exists (the usual case: an emptyDir mount point, which cannot be renamed or replaced):
  the staging directory is ``DEST/.kubeserve-staging-*`` (a sibling would be on another
  filesystem, often the read-only root). On success, ``DEST/.kubeserve-incomplete`` is
  created, each top-level entry is renamed from staging into DEST (same filesystem, each rename
  atomic), DEST is fsynced, then ``DEST/.kubeserve-storage.json`` is written (temp file, fsync,
  rename, fsync) and the incomplete marker removed. The JSON marker is the commit record: a
  model directory is complete exactly when it exists. A run that finds the incomplete marker
  (killed while moving) owns what is there, clears it and starts over; leftover staging dirs
  are removed. A DEST holding anything else is refused rather than overwritten.

Model data itself is not fsynced (gigabytes, and a node crash loses the pod anyway); the
directory entries and the commit record are.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import fsspec

from .credentials import Credentials
from .durable import fsync_dir, write_json
from .errors import DownloadError, UsageError
from .uri import ModelUri

log = logging.getLogger(__name__)

MARKER = ".kubeserve-storage.json"
INCOMPLETE = ".kubeserve-incomplete"
STAGING_PREFIX = ".kubeserve-staging-"
# aiohttp's default total timeout (5 min) would cut any large model; bound the stalls instead.
HTTP_CONNECT_TIMEOUT_S = 30.0
HTTP_READ_TIMEOUT_S = 300.0
_LOOPBACK = ("localhost", "127.0.0.1", "::1")
# What tells one content from another at the same address: S3's ETag and VersionId, GCS's
# etag, generation and md5Hash, an HTTP server's ETag, Content-MD5 or Digest. S3's
# LastModified is left out on purpose: uploading the same bytes again is still a hit.
_VERSION_FIELDS = ("ETag", "etag", "VersionId", "generation", "md5Hash", "Content-MD5", "Digest")


@dataclass(frozen=True)
class Fetched:
    """What a download produced in the staging directory."""

    files: int
    bytes: int
    # Set when the URI named a single object: its path in staging (e.g. an archive to unpack).
    single: Path | None


@dataclass(frozen=True)
class Version:
    """The content version of a model at its source, from the source's own listing."""

    tag: str  # a hash of (name, size, ETag or equivalent) of every object
    bytes: int  # the total size the source reports


def content_version(fs: Any, uri: ModelUri) -> Version | None:
    """The content version of ``uri``; None when the source gives none (or the lookup fails).

    One HEAD (a single object) or one listing (a prefix): never the objects' data.
    """
    try:
        info = fs.info(uri.path)
        if uri.is_http or info.get("type") == "file":
            files = {uri.basename: info}
        else:
            root = uri.path.rstrip("/")
            listing = fs.find(root, withdirs=False, detail=True)
            files = {
                key[len(root) + 1 :]: item
                for key, item in listing.items()
                if key.startswith(root + "/") and not key.endswith("/")
            }
    except Exception as exc:  # the download that follows reports it properly
        log.info("no content version for %s: %s", uri.redacted, type(exc).__name__)
        return None
    parts = []
    for name in sorted(files):
        item = files[name]
        tags = [f"{field}={item[field]}" for field in _VERSION_FIELDS if item.get(field)]
        if uri.is_http and not tags and item.get("Last-Modified"):
            # HTTP caches validate with Last-Modified when a server sends no ETag.
            tags.append(f"Last-Modified={item['Last-Modified']}")
        if not tags:
            return None
        parts.append([name, item.get("size"), tags])
    if not parts:
        return None
    digest = hashlib.sha256(json.dumps(parts, default=str).encode()).hexdigest()
    return Version(tag=digest, bytes=sum(int(p[1] or 0) for p in parts))


def filesystem(uri: ModelUri, creds: Credentials) -> Any:
    """An fsspec filesystem for ``uri``, configured with ``creds``."""
    if uri.scheme == "file":
        return fsspec.filesystem("file")
    if uri.scheme == "s3":
        options: dict[str, Any] = {}
        if creds.aws_access_key_id and creds.aws_secret_access_key:
            options["key"] = creds.aws_access_key_id.reveal()
            options["secret"] = creds.aws_secret_access_key.reveal()
            if creds.aws_session_token:
                options["token"] = creds.aws_session_token.reveal()
        # Otherwise botocore's own chain applies (IRSA web identity, instance profile).
        if creds.aws_endpoint_url:
            options["endpoint_url"] = creds.aws_endpoint_url
        if creds.aws_region:
            options["client_kwargs"] = {"region_name": creds.aws_region}
        return fsspec.filesystem("s3", **options)
    if uri.scheme == "gs":
        token: Any = None  # gcsfs' default chain: workload identity, metadata server
        if creds.google_service_account_json:
            try:
                token = json.loads(creds.google_service_account_json.reveal())
            except json.JSONDecodeError as exc:
                # Never include the text: it is a private key.
                raise UsageError("GOOGLE_APPLICATION_CREDENTIALS_JSON is not valid JSON") from exc
        return fsspec.filesystem("gs", token=token)
    return _http_filesystem(uri, creds)


def _http_filesystem(uri: ModelUri, creds: Credentials) -> Any:
    import aiohttp  # only http needs it; keeps `import fetch` light for s3/gs/file

    headers: dict[str, str] = {}
    if creds.https_bearer_token:
        if uri.scheme == "http" and uri.host not in _LOOPBACK:
            # A bearer token over plain http is readable by anyone on the path.
            raise UsageError(
                f"refusing to send HTTPS_BEARER_TOKEN over plain http to {uri.host}; use https"
            )
        headers["Authorization"] = f"Bearer {creds.https_bearer_token.reveal()}"
    timeout = aiohttp.ClientTimeout(
        total=None, sock_connect=HTTP_CONNECT_TIMEOUT_S, sock_read=HTTP_READ_TIMEOUT_S
    )
    # trust_env: honour HTTPS_PROXY/NO_PROXY, which clusters behind a proxy set on pods.
    return fsspec.filesystem(
        "http",
        client_kwargs={"headers": headers, "timeout": timeout, "trust_env": True},
    )


def download(fs: Any, uri: ModelUri, staging: Path) -> Fetched:
    """Copy the object or every file under the prefix named by ``uri`` into ``staging``."""
    try:
        if uri.is_http:
            return _one(fs, uri.path, staging / _safe_name(uri.basename, uri))
        if fs.isfile(uri.path):
            return _one(fs, uri.path, staging / _safe_name(uri.basename, uri))
        if fs.isdir(uri.path):
            return _tree(fs, uri, staging)
    except (UsageError, DownloadError):
        raise
    except FileNotFoundError as exc:
        raise DownloadError(f"not found: {uri.redacted}") from exc
    except PermissionError as exc:
        raise DownloadError(f"access denied: {uri.redacted}: {exc}") from exc
    except Exception as exc:  # network, auth, throttling: whatever the client raised
        raise DownloadError(f"cannot fetch {uri.redacted}: {type(exc).__name__}: {exc}") from exc
    raise DownloadError(f"no object or prefix at {uri.redacted}")


def _safe_name(name: str, uri: ModelUri) -> str:
    if not name or name in (".", "..") or "/" in name or "\\" in name:
        raise UsageError(f"cannot derive a file name from {uri.redacted}")
    return name


def _one(fs: Any, path: str, target: Path) -> Fetched:
    fs.get_file(path, str(target))
    if not target.is_file():
        raise DownloadError(f"the download of {target.name} produced no file")
    return Fetched(files=1, bytes=target.stat().st_size, single=target)


def _tree(fs: Any, uri: ModelUri, staging: Path) -> Fetched:
    root = uri.path.rstrip("/")
    sources: list[str] = []
    targets: list[str] = []
    for key in sorted(fs.find(root, withdirs=False)):
        # Skip S3 "folder" placeholder objects (keys ending in "/") and the root itself.
        if key.endswith("/") or not key.startswith(root + "/"):
            continue
        relative = key[len(root) + 1 :]
        parts = relative.split("/")
        # Object keys may contain anything, "../" included: never let one leave staging.
        if any(p in ("", ".", "..") for p in parts) or relative.startswith("/"):
            raise DownloadError(f"refusing object {relative!r} under {uri.redacted}: unsafe name")
        target = staging.joinpath(*parts)
        target.parent.mkdir(parents=True, exist_ok=True)
        sources.append(key)
        targets.append(str(target))
    if not sources:
        raise DownloadError(f"nothing to download under {uri.redacted} (empty prefix)")
    # Lists of paths: async filesystems (s3fs, gcsfs) fetch them concurrently.
    fs.get(sources, targets)
    total = sum(Path(t).stat().st_size for t in targets)
    return Fetched(files=len(targets), bytes=total, single=None)


# --- staging and commit ------------------------------------------------------------------


@contextlib.contextmanager
def staging_dir(dest: Path) -> Iterator[Path]:
    """A fresh staging directory for ``dest``, removed on any exit unless committed."""
    if dest.exists():
        if not dest.is_dir():
            raise UsageError(f"DEST {dest} exists and is not a directory")
        parent, prefix = dest, STAGING_PREFIX
    else:
        parent, prefix = dest.parent, f".{dest.name}{STAGING_PREFIX}"
        try:
            parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UsageError(f"cannot create the parent of DEST {dest}: {exc.strerror}") from exc
    try:
        path = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
    except OSError as exc:
        raise UsageError(f"cannot write into {parent}: {exc.strerror}") from exc
    # mkdtemp makes it 0700; it becomes DEST itself when DEST did not exist, and the server
    # may run as another user than the initializer.
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def prepare(dest: Path, redacted_uri: str) -> bool:
    """Clean our own leftovers in ``dest``; return True if it already holds this model.

    Raises UsageError when DEST holds something that is not ours.
    """
    if not dest.exists():
        for stale in dest.parent.glob(f".{dest.name}{STAGING_PREFIX}*"):
            shutil.rmtree(stale, ignore_errors=True)
        return False
    if not dest.is_dir():
        raise UsageError(f"DEST {dest} exists and is not a directory")
    if (dest / INCOMPLETE).exists():
        log.warning("a previous run was interrupted while committing; clearing %s", dest)
        _clear(dest)
        return False
    for stale in dest.glob(f"{STAGING_PREFIX}*"):
        shutil.rmtree(stale, ignore_errors=True)
    marker = dest / MARKER
    if marker.is_file():
        try:
            previous = json.loads(marker.read_text(encoding="utf-8")).get("uri")
        except (OSError, ValueError, AttributeError):
            previous = None
        if previous == redacted_uri:
            return True
        raise UsageError(f"DEST {dest} already holds another model ({previous})")
    leftovers = sorted(p.name for p in dest.iterdir())
    if leftovers:
        shown = ", ".join(leftovers[:5]) + (", ..." if len(leftovers) > 5 else "")
        raise UsageError(f"DEST {dest} is not empty ({shown}); refusing to overwrite it")
    return False


def recorded_bytes(dest: Path) -> int:
    """The model size the commit record of ``dest`` holds (0 if unreadable)."""
    try:
        return int(json.loads((dest / MARKER).read_text(encoding="utf-8"))["bytes"])
    except (OSError, ValueError, KeyError, TypeError):
        return 0


def commit(staging: Path, dest: Path, record: dict[str, Any]) -> None:
    """Make the staged model visible at ``dest``, atomically (see the module docstring)."""
    write_json(staging / MARKER, record)
    if not dest.exists():
        staging.rename(dest)
        fsync_dir(dest.parent)
        return
    marker = staging / MARKER
    (dest / INCOMPLETE).touch()
    fsync_dir(dest)
    for entry in staging.iterdir():
        if entry != marker:
            entry.rename(dest / entry.name)
    fsync_dir(dest)
    marker.rename(dest / MARKER)
    fsync_dir(dest)
    (dest / INCOMPLETE).unlink()
    fsync_dir(dest)


def _clear(dest: Path) -> None:
    for entry in dest.iterdir():
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()
