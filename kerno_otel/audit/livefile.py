"""The live file and its directory, held by descriptor: opened, renamed and checked relative
to the directory's fd, never through a symlink, one name per file.

The sealer owns this (under its lock); the writer thread only writes to the
descriptors it is handed. Everything that can happen to the file from outside —
deleted, renamed (logrotate without ``copytruncate``), replaced by a symlink or
another file, its directory removed, a hard link made to it — is found by
:meth:`LiveFile.check` (two ``stat`` calls) and answered by
:meth:`LiveFile.replace`, which opens a fresh live file and says what became of
the old one, for the sealer to record in-band. A removed file's records are not
lost with it: the writer still holds it open, and :meth:`LiveFile.restore` copies it
back into the directory under a rotated name.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from kerno_otel.audit import files
from kerno_otel.audit.files import AuditFileError

_DIR_FLAGS: Final = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC
_NEW_FLAGS: Final = files.OPEN_FLAGS | os.O_EXCL

#: What :meth:`LiveFile.check` can find (also the keys of ``stats()["file_faults"]``).
RENAMED: Final = "renamed"  # the file is in the directory under another name
REMOVED: Final = "removed"  # the file is no longer in the directory (deleted or moved out)
HARD_LINK: Final = "hard_link"  # the file has another name too (alarm only)


@dataclass(frozen=True)
class Replaced:
    """What :meth:`LiveFile.replace` did: the old file's fate, and the new descriptor."""

    reason: str  # RENAMED or REMOVED
    old_name: str  # the old file's name now (RENAMED), else the live file's name
    set_aside: str | None  # what stood at the live path, moved aside (not ours)
    displaced: str | None  # what that was: "a symbolic link", "a file", ...
    fd: int


def _identity(info: os.stat_result) -> tuple[int, int]:
    return info.st_dev, info.st_ino


class LiveFile:
    """The directory (by fd) and the live file's name and identity (device, inode)."""

    def __init__(self, live: Path, gid: int | None = None) -> None:
        self.live = live
        self._gid = gid  # audit.file_group's: files 0640 and the directory 0750, that group
        self.name = live.name
        self._dir_fd = self._open_directory()
        self._identity: tuple[int, int] | None = None
        self._fd = -1
        self._warned_links = False

    # -- opening -------------------------------------------------------------------------

    def _open_directory(self) -> int:
        files.ensure_directory(self.live.parent, self._gid)
        try:
            return os.open(self.live.parent, _DIR_FLAGS)
        except OSError as exc:
            raise AuditFileError(
                f"{self.live.parent}: cannot open the audit directory: {exc.strerror}"
            ) from None

    def open(self) -> int:
        """Open the live file for appending (created 0600 if missing); its fd.

        Refuses a symlink, anything but a regular file, and a file with another
        name (a hard link: a writer given that name would take another lock and
        fork the chain in the same file).
        """
        try:
            fd = os.open(self.name, files.OPEN_FLAGS, files.FILE_MODE, dir_fd=self._dir_fd)
        except OSError as exc:
            raise files._open_error(self.live, exc) from None
        try:
            self._adopt(fd)
        except BaseException:
            os.close(fd)
            raise
        return fd

    def _adopt(self, fd: int) -> None:
        """Check what ``fd`` is (and that the name still holds it) and make it the live file."""
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise AuditFileError(f"{self.live}: not a regular file")
        files.check_owner(self.live, info)
        if info.st_nlink > 1:
            raise AuditFileError(
                f"{self.live}: has {info.st_nlink} names (a hard link); another name for the "
                "live file would let a second writer fork its chain: remove the other link"
            )
        try:
            here = os.stat(self.name, dir_fd=self._dir_fd, follow_symlinks=False)
        except OSError as exc:
            raise files._open_error(self.live, exc) from None
        if _identity(here) != _identity(info):
            raise AuditFileError(f"{self.live}: replaced while being opened")
        files.share(fd, self._gid)
        self._identity, self._fd, self._warned_links = _identity(info), fd, False

    def close(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self._dir_fd)

    # -- rotation ------------------------------------------------------------------------

    def holds_ours(self) -> bool:
        """Whether the live name (not a symlink's target) is the live file we opened."""
        try:
            here = os.stat(self.name, dir_fd=self._dir_fd, follow_symlinks=False)
        except OSError:
            return False
        return _identity(here) == self._identity

    def rotate(self, rotated: str) -> int:
        """Rename the live file to ``rotated`` and open a new one; the new fd.

        Only while the name still holds our file: a symlink or any other file put
        there is never renamed (``OSError`` ESTALE; :meth:`check` then finds it).
        When the new file cannot be opened, the old one is renamed back.
        """
        if not self.holds_ours():
            raise OSError(errno.ESTALE, "the path no longer holds the file being written")
        d = self._dir_fd
        os.rename(self.name, rotated, src_dir_fd=d, dst_dir_fd=d)
        try:
            fd = os.open(self.name, _NEW_FLAGS, files.FILE_MODE, dir_fd=d)
        except OSError:
            with contextlib.suppress(OSError):
                os.rename(rotated, self.name, src_dir_fd=d, dst_dir_fd=d)
            raise
        try:
            self._adopt(fd)
        except BaseException:
            os.close(fd)
            raise
        return fd

    # -- outside interference ------------------------------------------------------------

    def check(self) -> str | None:
        """What happened to the live file from outside, if anything: RENAMED, REMOVED,
        HARD_LINK (once per file, alarm only) or None. Two ``stat`` calls."""
        try:
            ours = os.fstat(self._fd)
        except OSError:
            return None  # closed: the writer is shutting down
        if ours.st_nlink and self.holds_ours():
            if ours.st_nlink > 1 and not self._warned_links:
                self._warned_links = True
                return HARD_LINK
            return None
        return RENAMED if self._our_name(ours) is not None else REMOVED

    def _our_name(self, ours: os.stat_result) -> str | None:
        """The name our file has in the directory now (not the live name), if any."""
        if ours.st_nlink == 0 or self._directory_gone():
            return None
        with contextlib.suppress(OSError), os.scandir(self._dir_fd) as entries:
            for entry in entries:
                if entry.inode() == ours.st_ino and entry.name != self.name:
                    found = os.stat(entry.name, dir_fd=self._dir_fd, follow_symlinks=False)
                    if _identity(found) == _identity(ours):
                        return entry.name
        return None

    def _directory_gone(self) -> bool:
        try:
            return os.fstat(self._dir_fd).st_nlink == 0
        except OSError:
            return True

    def replace(self, now_ns: int) -> Replaced:
        """Open a fresh live file after :meth:`check` found ours renamed or removed.

        A directory that was removed is made again (0700). Whatever stands at the
        live path — a symlink, a non-empty file, anything that is not an empty
        regular file with one name that this writer's user owns — is renamed aside to
        ``<live>.displaced-<stamp>`` (never opened, read or followed) and a new file is
        created in its place; such an empty file (logrotate's ``create``) is taken over
        and tightened to 0600.
        Raises ``OSError`` when no live file can be opened (the caller retries).
        """
        try:
            ours = os.fstat(self._fd)
        except OSError as exc:
            raise OSError(errno.EBADF, "the live file is closed") from exc
        old_name = self._our_name(ours)
        if self._directory_gone():
            new_dir = self._open_directory()
            os.close(self._dir_fd)
            self._dir_fd = new_dir
        d = self._dir_fd
        set_aside = displaced = None
        try:
            here: os.stat_result | None = os.stat(self.name, dir_fd=d, follow_symlinks=False)
        except FileNotFoundError:
            here = None
        if here is not None and not (
            stat.S_ISREG(here.st_mode)
            and here.st_size == 0
            and here.st_nlink == 1
            and here.st_uid == os.geteuid()
        ):
            set_aside = f"{self.name}.displaced-{files.stamp(now_ns)}"
            displaced = _kind(here)
            os.rename(self.name, set_aside, src_dir_fd=d, dst_dir_fd=d)
        flags = files.OPEN_FLAGS if here is not None and set_aside is None else _NEW_FLAGS
        fd = os.open(self.name, flags, files.FILE_MODE, dir_fd=d)
        try:
            self._adopt(fd)
            if os.fstat(fd).st_size:  # filled between the look and the open: not ours
                raise OSError(errno.EEXIST, "a file with content took the live path")
        except BaseException:
            os.close(fd)
            raise
        reason = RENAMED if old_name is not None else REMOVED
        return Replaced(reason, old_name or self.name, set_aside, displaced, fd)

    # -- keeping what a removed file held -------------------------------------------------

    def reader(self) -> int:
        """A read-only descriptor of the live file being written, even once it has no name
        (``/proc/self/fd``, checked to be the same inode): what :meth:`restore` copies.
        Raises ``OSError`` when it cannot be had (no ``/proc``, the file closed)."""
        fd = os.open(f"/proc/self/fd/{self._fd}", os.O_RDONLY | os.O_CLOEXEC)
        try:
            if _identity(os.fstat(fd)) != self._identity:
                raise OSError(errno.ESTALE, "the descriptor no longer holds the live file")
        except BaseException:
            os.close(fd)
            raise
        return fd

    def restore(self, reader: int, name: str) -> int:
        """Copy everything ``reader`` holds into a new file ``name`` in the directory (0600,
        never over an existing name, synced); the bytes copied. The copy is made under
        ``<name>.part`` and linked to ``name`` whole, so no reader (the forwarder, verify)
        ever sees it half made. On any error nothing is left and ``OSError`` is raised
        (``FileExistsError`` when ``name`` is taken)."""
        d, part = self._dir_fd, f"{name}{PART_SUFFIX}"
        fd = os.open(part, _NEW_FLAGS, files.FILE_MODE, dir_fd=d)
        try:
            files.share(fd, self._gid)
            copied = 0
            while chunk := os.pread(reader, _COPY_CHUNK, copied):
                files.write_all(fd, chunk)
                copied += len(chunk)
            os.fsync(fd)
            # link(), not rename(): it never replaces what another hand put at ``name``
            os.link(part, name, src_dir_fd=d, dst_dir_fd=d, follow_symlinks=False)
        finally:
            os.close(fd)
            with contextlib.suppress(OSError):
                os.unlink(part, dir_fd=d)
        return copied


_COPY_CHUNK: Final = 1 << 20
#: The suffix of a copy being made (:meth:`LiveFile.restore`); never a name the stream's.
PART_SUFFIX: Final = ".part"


def _kind(info: os.stat_result) -> str:
    if stat.S_ISLNK(info.st_mode):
        return "a symbolic link"
    if stat.S_ISDIR(info.st_mode):
        return "a directory"
    if stat.S_ISREG(info.st_mode):
        return "a file with content" if info.st_size else "a file with another name"
    return "a special file"
