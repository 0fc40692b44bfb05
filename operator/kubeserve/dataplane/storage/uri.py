"""Parse and validate model URIs; produce the redacted form that is safe to log.

Accepted: ``s3://bucket[/key-or-prefix]``, ``gs://bucket[/key-or-prefix]``, ``https://...``
(``http://`` too: in-cluster servers often lack TLS; see ``credentials`` for when a bearer
token may go over it), ``file:///abs/path`` and plain local paths.

Refused: credentials inside the URI (``https://user:pass@host``, ``s3://KEY:SECRET@bucket``):
they would end up in the pod spec, in events and in logs. Use a Secret instead.

Redaction: presigned URLs carry their signature in the query string, so logs show the query as
``?REDACTED`` and never any user info.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from urllib.parse import SplitResult, urlsplit

from .errors import UsageError

REMOTE_SCHEMES = ("s3", "gs", "https", "http")
# DNS-compatible bucket names (S3 and GCS both); GCS also allows dots and underscores.
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9._-]{1,220}[a-z0-9]$")


@dataclass(frozen=True)
class ModelUri:
    scheme: str  # s3 | gs | https | http | file
    # What fsspec gets: "bucket/key" for s3/gs, the full URL for http(s), a local path for file.
    path: str
    # Host (http/https) or bucket (s3/gs); empty for file.
    host: str
    redacted: str

    @property
    def is_http(self) -> bool:
        return self.scheme in ("http", "https")

    @property
    def basename(self) -> str:
        """The last path segment (a URL's, without its query)."""
        if self.is_http:
            return urlsplit(self.path).path.rstrip("/").rsplit("/", 1)[-1]
        return self.path.rstrip("/").rsplit("/", 1)[-1]


def parse(uri: str) -> ModelUri:
    """Validate ``uri``; raise UsageError with a message that never repeats a secret."""
    if not uri or uri != uri.strip():
        raise UsageError("the model URI is empty or has surrounding whitespace")
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in uri):
        raise UsageError("the model URI contains control characters")
    if "://" not in uri:
        if ":" in uri.split("/", 1)[0] and not uri.startswith(("/", ".")):
            # "s3:bucket/key" and similar typos: not a local path either.
            raise UsageError(
                f"unsupported model URI {_scheme_only(uri)}: expected one of "
                "s3://, gs://, https://, http://, file:// or a local path"
            )
        return _local(uri)
    parts = urlsplit(uri)
    scheme = parts.scheme.lower()
    if parts.username is not None or parts.password is not None or "@" in parts.netloc:
        # Never echo the URI here: the user info may be a password.
        raise UsageError(
            f"the model URI ({scheme}://...) embeds credentials; put them in a Secret "
            "(credentialsSecret) or environment variables instead"
        )
    if scheme == "file":
        if parts.netloc not in ("", "localhost"):
            raise UsageError("file:// URIs must be local: file:///absolute/path")
        if parts.query or parts.fragment:
            raise UsageError("file:// URIs take no query or fragment")
        return _local(parts.path)
    if scheme in ("s3", "gs"):
        return _bucket_uri(scheme, parts)
    if scheme in ("https", "http"):
        return _http_uri(scheme, uri, parts)
    if scheme == "pvc":
        raise UsageError("pvc:// models are mounted by the operator, not downloaded")
    raise UsageError(
        f"unsupported model URI scheme {scheme!r}: expected s3, gs, https, http or file"
    )


def redact(uri: str) -> str:
    """A loggable form of any URI string, even one that ``parse`` refuses."""
    try:
        parts = urlsplit(uri)
    except ValueError:
        return "<unparsable URI>"
    if not parts.scheme or "://" not in uri:
        return uri.split("?", 1)[0]
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    query = "?REDACTED" if parts.query else ""
    return f"{parts.scheme}://{host}{parts.path}{query}"


def _scheme_only(uri: str) -> str:
    return repr(uri.split(":", 1)[0] + ":")


def _local(path: str) -> ModelUri:
    if not path:
        raise UsageError("the model path is empty")
    absolute = os.path.abspath(path)
    return ModelUri(scheme="file", path=absolute, host="", redacted=f"file://{absolute}")


def _bucket_uri(scheme: str, parts: SplitResult) -> ModelUri:
    bucket = parts.netloc
    if not _BUCKET.match(bucket):
        raise UsageError(f"invalid bucket name {bucket!r} in {scheme}:// URI")
    if parts.query or parts.fragment:
        raise UsageError(f"{scheme}:// URIs take no query or fragment")
    key = parts.path.lstrip("/")
    if any(segment in (".", "..") for segment in key.split("/")):
        raise UsageError(f"{scheme}:// URI has '.' or '..' segments in its key")
    path = f"{bucket}/{key}" if key else bucket
    return ModelUri(scheme=scheme, path=path, host=bucket, redacted=f"{scheme}://{path}")


def _http_uri(scheme: str, uri: str, parts: SplitResult) -> ModelUri:
    if not parts.hostname:
        raise UsageError(f"{scheme}:// URI has no host")
    try:
        _ = parts.port  # raises on a non-numeric or out-of-range port
    except ValueError as exc:
        raise UsageError(f"{scheme}:// URI has an invalid port") from exc
    if not parts.path.rstrip("/") or parts.path.endswith("/"):
        raise UsageError(
            f"{scheme}:// URIs must name a file (a model file or an archive), "
            f"not a directory: {redact(uri)}"
        )
    # The fragment is never sent to the server; drop it so fsspec does not either.
    url = uri.split("#", 1)[0]
    return ModelUri(scheme=scheme, path=url, host=parts.hostname, redacted=redact(url))
