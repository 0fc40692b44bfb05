"""A model cache on a shared volume: fill once, copy out many times, evict the least recently used.

The storage initializer of every pod that opts in mounts the same volume (a PersistentVolumeClaim,
ReadWriteMany when pods run on several nodes). Layout, under a format version so a later
layout can live beside this one::

    v1/entries/<key>/data/        the model as fetched and unpacked (before the layout check,
                                  which depends on the runtime and the model name)
    v1/entries/<key>/entry.json   {uri, version, bytes}; its mtime is the entry's last use
    v1/staging/<key>.<random>/    fills in progress, and evicted entries being deleted
    v1/locks/<key>.lock           flock(2): shared while an entry is copied out, exclusive
                                  while it is filled or evicted

The key hashes the model URI (redacted, without its query) and the content version the source
reports (ETags, sizes and names), so a changed object at the same URI is a different entry.

Atomic fill: a fill writes into staging, then renames the staging directory to
``entries/<key>`` in one rename(2), which fails if the entry already exists (rename-if-absent):
a reader sees a whole entry or none, even where locks do not work. The exclusive lock makes
a second initializer of the same model wait for the first one's fill instead of downloading
too. Locks die with their process (on NFS, with the client's lease), and every wait is bounded.

Bound: before and after a fill, entries are evicted, least recently used first, until the
total is within ``max_bytes``; never the entry being filled, never one whose lock is held (being
copied out or filled right now). Lock files stay (a few bytes each): deleting a lock file that
another process may be opening breaks the lock.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from .durable import fsync_dir, write_json

log = logging.getLogger(__name__)

FORMAT = "v1"
ENTRY_FILE = "entry.json"
DATA_DIR = "data"
LOCK_POLL_S = 0.2
# Long enough for another pod to download a big model, bounded so a stuck holder cannot hold a
# pod forever: past it, the initializer downloads on its own without the cache.
DEFAULT_LOCK_WAIT_S = 1800.0
_SIZE = re.compile(r"^([0-9]+(?:\.[0-9]+)?)(Ki|Mi|Gi|Ti|Pi|Ei|k|M|G|T|P|E)?$")
_FACTORS: dict[str | None, int] = {
    None: 1,
    **{s: 1000 ** (i + 1) for i, s in enumerate(("k", "M", "G", "T", "P", "E"))},
    **{s: 1024 ** (i + 1) for i, s in enumerate(("Ki", "Mi", "Gi", "Ti", "Pi", "Ei"))},
}


class CacheUnavailable(Exception):
    """The cache cannot be used now (volume not writable, lock wait exceeded): go without it."""


@dataclass(frozen=True)
class Entry:
    path: Path  # the model's files
    bytes: int
    hit: bool  # served from the cache without fetching
    cached: bool  # the files stay in the cache after use (False: too big, served once)


def parse_size(text: str) -> int:
    """Bytes in a Kubernetes quantity such as 20Gi, 500M or 1073741824."""
    match = _SIZE.match(text.strip())
    if not match:
        raise ValueError(f"not a size: {text!r} (expected e.g. 20Gi, 500M)")
    return int(float(match[1]) * _FACTORS[match[2]])


def key(uri: str, version: str) -> str:
    """The entry name for ``uri`` (redacted; its query is dropped here) at content ``version``."""
    # A presigned URL's query changes with every signature; the content version is what
    # tells two objects at one address apart.
    base = uri.split("?", 1)[0].split("#", 1)[0]
    return hashlib.sha256(json.dumps([base, version]).encode()).hexdigest()[:32]


class Cache:
    def __init__(
        self, root: Path, max_bytes: int, *, lock_wait_s: float = DEFAULT_LOCK_WAIT_S
    ) -> None:
        self.root = root / FORMAT
        self.max_bytes = max_bytes
        self.lock_wait_s = lock_wait_s
        self.entries = self.root / "entries"
        self.staging = self.root / "staging"
        self.locks = self.root / "locks"

    @contextlib.contextmanager
    def entry(
        self, name: str, fill: Callable[[Path], int], meta: dict[str, Any], expected: int = 0
    ) -> Iterator[Entry]:
        """The entry ``name``, filled by ``fill(dir) -> bytes`` if absent; locked while in use.

        ``expected``: the size the source reports, to make room before the download.
        Raises CacheUnavailable for problems of the cache itself; errors of ``fill`` pass through.
        """
        try:
            for folder in (self.entries, self.staging, self.locks):
                folder.mkdir(parents=True, exist_ok=True)
            lock = (self.locks / f"{name}.lock").open("a")
        except OSError as exc:
            raise CacheUnavailable(f"cannot use the cache at {self.root}: {exc}") from exc
        with lock:
            # Shared first: any number of pods may copy one entry out at the same time.
            self._lock(lock, fcntl.LOCK_SH, name)
            found = self._read(name)
            if found is None:
                # Not atomic (flock converts by unlocking first): check again once exclusive.
                self._lock(lock, fcntl.LOCK_EX, name)
                found = self._read(name)
            if found is not None:
                self._touch(name)
                yield found
                return
            yield from self._fill(name, fill, meta, expected)

    def _fill(
        self, name: str, fill: Callable[[Path], int], meta: dict[str, Any], expected: int
    ) -> Iterator[Entry]:
        # Exclusive: nobody else fills this key; staging dirs of it are leftovers of a crash.
        self._sweep(name)
        self._evict_quietly(name, expected)
        try:
            staging = Path(tempfile.mkdtemp(prefix=f"{name}.", dir=self.staging))
            (staging / DATA_DIR).mkdir()
        except OSError as exc:
            raise CacheUnavailable(f"cannot write into the cache at {self.root}: {exc}") from exc
        try:
            size = fill(staging / DATA_DIR)
            if size > self.max_bytes:
                log.warning(
                    "the model (%d bytes) is bigger than the cache (%d bytes): not cached",
                    size,
                    self.max_bytes,
                )
                yield Entry(staging / DATA_DIR, size, hit=False, cached=False)
                return
            write_json(staging / ENTRY_FILE, {**meta, "bytes": size})
            target = self.entries / name
            try:
                os.rename(staging, target)  # rename-if-absent: a non-empty target stays
            except OSError as exc:
                if exc.errno not in (errno.EEXIST, errno.ENOTEMPTY):
                    raise CacheUnavailable(f"cannot commit a cache entry: {exc}") from exc
                log.info("another initializer filled the cache entry first; using it")
            fsync_dir(self.entries)
            entry = self._read(name)
            if entry is None:
                raise CacheUnavailable("a cache entry vanished right after its fill")
            self._evict_quietly(name, 0)
            yield Entry(entry.path, entry.bytes, hit=False, cached=True)
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    def evict(self, keep: str, incoming: int = 0) -> list[str]:
        """Remove least recently used entries until they total ``max_bytes - incoming``."""
        budget = self.max_bytes - incoming
        entries = []
        for path in self.entries.iterdir():
            found = self._read(path.name)
            with contextlib.suppress(FileNotFoundError):  # evicted by another pod meanwhile
                if found is not None:
                    used = (path / ENTRY_FILE).stat().st_mtime
                    entries.append((used, path.name, found.bytes))
        total = sum(size for _, _, size in entries)
        evicted = []
        for _used, name, size in sorted(entries):
            if total <= budget:
                break
            if name == keep or not self._remove(name):
                continue
            total -= size
            evicted.append(name)
            log.info("evicted cache entry %s (%d bytes, least recently used)", name, size)
        if total > budget:
            log.warning("the cache holds %d bytes, over its bound: entries in use", total)
        self._sweep_others(keep)
        return evicted

    def _evict_quietly(self, keep: str, incoming: int) -> None:
        try:
            self.evict(keep=keep, incoming=incoming)
        except OSError as exc:  # a full or flaky cache volume must not fail the model
            log.warning("cache eviction failed: %s", exc)

    # --- helpers ---------------------------------------------------------------------------

    def _read(self, name: str) -> Entry | None:
        """The complete entry ``name``, or None. Complete exactly when its entry.json exists."""
        try:
            record = json.loads((self.entries / name / ENTRY_FILE).read_text(encoding="utf-8"))
            size = int(record["bytes"])
        except (OSError, ValueError, KeyError, TypeError):
            return None
        return Entry(self.entries / name / DATA_DIR, size, hit=True, cached=True)

    def _touch(self, name: str) -> None:
        with contextlib.suppress(OSError):  # a read-only snapshot still serves
            os.utime(self.entries / name / ENTRY_FILE)

    def _lock(self, lock: IO[str], mode: int, name: str) -> None:
        deadline = time.monotonic() + self.lock_wait_s
        while True:
            try:
                fcntl.flock(lock.fileno(), mode | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise CacheUnavailable(
                        f"cache entry {name} stayed locked for {self.lock_wait_s:.0f} s"
                    ) from None
                time.sleep(LOCK_POLL_S)
            except OSError as exc:  # e.g. ENOLCK: an NFS mount without locking
                raise CacheUnavailable(f"cannot lock cache entry {name}: {exc}") from exc

    def _remove(self, name: str) -> bool:
        """Evict ``name`` unless its lock is held; True if it is gone."""
        with (self.locks / f"{name}.lock").open("a") as lock:
            try:
                fcntl.flock(lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                return False  # in use: being copied out or filled
            trash = Path(tempfile.mkdtemp(prefix=f"{name}.evicted.", dir=self.staging))
            # One rename takes the entry out of sight; deleting can take its time.
            with contextlib.suppress(FileNotFoundError):  # another pod evicted it first
                os.rename(self.entries / name, trash / name)
            shutil.rmtree(trash, ignore_errors=True)
            return True

    def _sweep(self, name: str) -> None:
        for stale in self.staging.glob(f"{name}.*"):
            shutil.rmtree(stale, ignore_errors=True)

    def _sweep_others(self, keep: str) -> None:
        """Delete staging dirs of crashed fills and interrupted evictions of other keys."""
        for stale in self.staging.iterdir():
            owner = stale.name.split(".", 1)[0]
            if owner == keep:
                continue
            with (self.locks / f"{owner}.lock").open("a") as lock:
                try:
                    fcntl.flock(lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                except OSError:
                    continue  # a fill in progress
                shutil.rmtree(stale, ignore_errors=True)


def copy_tree(source: Path, target: Path) -> None:
    """Copy the files of ``source`` into the existing directory ``target``."""
    # copyfile, not copy2: the cache's owner and modes are not the model directory's business.
    shutil.copytree(source, target, dirs_exist_ok=True, copy_function=shutil.copyfile)
