"""Errors of the storage initializer, each carrying the CLI's exit code.

The codes are a contract with the operator (and documented in images/README.md): 2 means the
input is wrong (fix the spec), 3 that fetching failed (may be transient: the kubelet retries the
init container), 4 that the content is not what the runtime can serve (fix the model).
"""

from __future__ import annotations


class StorageError(Exception):
    exit_code = 1


class UsageError(StorageError):
    """Bad arguments, an invalid or unsupported URI, or an unusable DEST."""

    exit_code = 2


class DownloadError(StorageError):
    """The source could not be read: not found, denied, network, timeout."""

    exit_code = 3


class LayoutError(StorageError):
    """The fetched files are not what the runtime expects."""

    exit_code = 4


class ArchiveError(LayoutError):
    """An archive is corrupt or unsafe (absolute paths, `..`, links escaping DEST)."""
