"""The storage initializer: fetch a model into a directory, safely and atomically.

Runs as the init container of every model server pod (images/storage-initializer) and inside
`kubeserve serve`. One module per job:

- ``uri``: parse and validate a model URI, refuse embedded credentials, redact it for logs;
- ``credentials``: read credentials from env vars or the files of a mounted Secret;
- ``fetch``: download through fsspec into a staging directory, then commit it into DEST;
- ``archive``: unpack .tar.gz/.tgz/.tar/.zip, refusing entries that would escape DEST;
- ``layout``: check (and minimally normalize) the layout each runtime expects;
- ``cache``: an opt-in model cache on a shared volume (keys, atomic fills, LRU eviction);
- ``report``: the timing report in the termination message (standard library only);
- ``__main__``: the CLI, ``python -m kubeserve.dataplane.storage URI DEST``.
"""

from __future__ import annotations

from .errors import ArchiveError, DownloadError, LayoutError, StorageError, UsageError

__all__ = ["ArchiveError", "DownloadError", "LayoutError", "StorageError", "UsageError"]
