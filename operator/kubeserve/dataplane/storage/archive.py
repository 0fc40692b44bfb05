"""Unpack model archives without letting an entry escape the target directory.

Supported by name: ``.tar.gz``, ``.tgz``, ``.tar`` and ``.zip``. (A TorchServe ``.mar`` is a zip
too, but it is served as it is, so it is never unpacked.)

Refused, with the whole unpack undone by the caller (it works in a staging directory):
absolute names, ``..`` segments, device files and FIFOs, symlinks whose target is absolute or
resolves outside the target, hard links to anything but an earlier regular file inside it,
any entry written through a symlink, and symlinks in zip files (zipfile cannot create them,
and a text file in their place would be a silent surprise).

Members are written by hand (``O_EXCL | O_NOFOLLOW``, plain permissions, no owners) instead of
``tarfile.extractall``: its ``filter='data'`` safety exists only from Python 3.11.4, and our
images' Debian Python is 3.11.2.
"""

from __future__ import annotations

import os
import shutil
import stat
import tarfile
import zipfile
from pathlib import Path
from typing import IO

from .errors import ArchiveError

_TAR_SUFFIXES = (".tar.gz", ".tgz", ".tar")
_ZIP_SUFFIXES = (".zip",)
_CHUNK = 1 << 20


def is_archive(name: str) -> bool:
    return name.lower().endswith(_TAR_SUFFIXES + _ZIP_SUFFIXES)


def unpack(archive: Path, target: Path) -> int:
    """Unpack ``archive`` into the existing directory ``target``; return the bytes written."""
    name = archive.name.lower()
    try:
        if name.endswith(_ZIP_SUFFIXES):
            return _unpack_zip(archive, target)
        if name.endswith(_TAR_SUFFIXES):
            return _unpack_tar(archive, target)
    except (tarfile.TarError, zipfile.BadZipFile, EOFError) as exc:
        raise ArchiveError(f"{archive.name} is not a valid archive: {exc}") from exc
    raise ArchiveError(f"{archive.name} is not a supported archive (.tar.gz, .tgz, .tar, .zip)")


class _Writer:
    """Creates members under ``root``, checking every path against the real filesystem."""

    def __init__(self, root: Path) -> None:
        self.root = Path(os.path.realpath(root))
        self.symlinks: list[Path] = []
        self.written = 0

    def resolve(self, name: str) -> Path:
        """The target path of member ``name``; refuses anything that could leave ``root``."""
        if name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":"):
            raise ArchiveError(f"refusing absolute path {name!r} in archive")
        parts = [p for p in name.replace("\\", "/").split("/") if p not in ("", ".")]
        if ".." in parts:
            raise ArchiveError(f"refusing path with '..' {name!r} in archive")
        if not parts:
            raise ArchiveError(f"refusing empty member name {name!r} in archive")
        # No member may be written through a symlink, one from this archive included: walk
        # the parent directories from the root, refusing links and creating what is missing.
        current = self.root
        for part in parts[:-1]:
            current = current / part
            if current.is_symlink():
                raise ArchiveError(f"refusing {name!r}: its directory is reached through a symlink")
            if not current.exists():
                current.mkdir(mode=0o755)
            elif not current.is_dir():
                raise ArchiveError(f"refusing {name!r}: {part!r} is not a directory")
        return current / parts[-1]

    def inside(self, path: Path) -> bool:
        real = Path(os.path.realpath(path))
        return real == self.root or self.root in real.parents

    def directory(self, name: str) -> None:
        path = self.resolve(name)
        if path.is_symlink():
            raise ArchiveError(f"refusing directory {name!r}: a symlink is in its place")
        path.mkdir(mode=0o755, exist_ok=True)

    def file(self, name: str, source: IO[bytes], mode: int) -> None:
        path = self.resolve(name)
        if path.is_symlink() or path.is_dir():
            raise ArchiveError(f"refusing {name!r}: a link or directory is in its place")
        # Plain permissions: rw for the owner, r for others, x kept if the archive had it.
        perms = 0o755 if mode & 0o111 else 0o644
        if path.exists():
            path.unlink()  # a later member of the same name wins, as with tar
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, perms)
        with os.fdopen(fd, "wb") as out:
            while chunk := source.read(_CHUNK):
                out.write(chunk)
                self.written += len(chunk)

    def symlink(self, name: str, target: str) -> None:
        path = self.resolve(name)
        if os.path.isabs(target) or target.startswith("\\"):
            raise ArchiveError(f"refusing symlink {name!r} -> {target!r}: absolute target")
        if not self.inside(path.parent / target):
            raise ArchiveError(f"refusing symlink {name!r} -> {target!r}: it escapes the target")
        if path.is_symlink() or path.exists():
            raise ArchiveError(f"refusing symlink {name!r}: something is already in its place")
        os.symlink(target, path)
        self.symlinks.append(path)

    def hardlink(self, name: str, target: str) -> None:
        source = self.resolve(target)  # tar hard link targets are member names
        path = self.resolve(name)
        if source.is_symlink() or not source.is_file() or not self.inside(source):
            raise ArchiveError(
                f"refusing hard link {name!r} -> {target!r}: not an earlier regular file inside"
            )
        if path.is_symlink() or path.exists():
            raise ArchiveError(f"refusing hard link {name!r}: something is already in its place")
        try:
            os.link(source, path)
        except OSError:
            shutil.copyfile(source, path)  # a filesystem without hard links

    def verify_links(self) -> None:
        # A symlink checked when its target did not exist yet can be redirected by a later
        # member (a -> c/.., then c -> .): check every link again at the end.
        for link in self.symlinks:
            if not self.inside(link):
                raise ArchiveError(
                    f"refusing symlink {link.relative_to(self.root)!s}: it escapes the target"
                )


def _unpack_tar(archive: Path, target: Path) -> int:
    writer = _Writer(target)
    # Streaming mode ("r|*"): one pass, no seeking, handles gzip and plain tar.
    with tarfile.open(archive, mode="r|*") as tar:
        for member in tar:
            if member.isdir():
                writer.directory(member.name)
            elif member.isreg():
                source = tar.extractfile(member)
                if source is None:  # pragma: no cover - isreg() members always have data
                    raise ArchiveError(f"cannot read {member.name!r} from the archive")
                writer.file(member.name, source, member.mode)
            elif member.issym():
                writer.symlink(member.name, member.linkname)
            elif member.islnk():
                writer.hardlink(member.name, member.linkname)
            else:
                raise ArchiveError(
                    f"refusing {member.name!r}: device files and FIFOs are not model files"
                )
    writer.verify_links()
    return writer.written


def _unpack_zip(archive: Path, target: Path) -> int:
    writer = _Writer(target)
    with zipfile.ZipFile(archive) as zf:
        for info in zf.infolist():
            mode = info.external_attr >> 16
            if stat.S_ISLNK(mode):
                raise ArchiveError(f"refusing symlink {info.filename!r} in a zip archive")
            if info.is_dir():
                writer.directory(info.filename)
                continue
            with zf.open(info) as source:
                writer.file(info.filename, source, mode)
    return writer.written
