"""The audit log's files: safe opening, torn-tail repair, rotated names, compression and retention.

Everything here runs either before the writer thread starts or on the writer
thread itself (rotation), or on the compressor thread (after the fact); none of
it is on the emitting thread's path.
"""

from __future__ import annotations

import errno
import fcntl
import grp
import gzip
import os
import re
import shutil
import stat
import time
from pathlib import Path
from typing import Final

#: Opening flags of the live file: append-only, never through a symlink.
OPEN_FLAGS: Final = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
FILE_MODE: Final = 0o600
DIR_MODE: Final = 0o700
#: With ``audit.file_group``: the group may read the files and enter the directory.
SHARED_FILE_MODE: Final = 0o640
SHARED_DIR_MODE: Final = 0o750

_STAMP_FORMAT: Final = "%Y%m%dT%H%M%S"


class AuditFileError(OSError):
    """The audit log's file or directory cannot be used safely; the message says which and why."""


def group_id(group: str | int) -> int:
    """The gid of ``audit.file_group`` (a group name or a number); KeyError when unknown."""
    if isinstance(group, int):
        return group
    if group.isdigit():
        return int(group)
    return grp.getgrnam(group).gr_gid


def share(fd: int, gid: int | None, *, directory: bool = False) -> None:
    """Give ``fd`` the mode the log promises: 0600 (0700 for the directory), or with
    ``audit.file_group`` (``gid``) 0640 (0750) and that group.

    The one place ``audit.file_group`` acts; called right after each open.
    """
    if gid is None:
        mode = DIR_MODE if directory else FILE_MODE
    else:
        mode = SHARED_DIR_MODE if directory else SHARED_FILE_MODE
        if os.fstat(fd).st_gid != gid:
            os.fchown(fd, -1, gid)
    if stat.S_IMODE(os.fstat(fd).st_mode) != mode:
        os.fchmod(fd, mode)


def _share_directory(directory: Path, gid: int, created: bool) -> None:
    """With ``audit.file_group``: the log directory 0750 and that group.

    Only a directory that is ours (created now, or owned by us and private: 0700 or
    0750); never ``/var/log`` or another shared parent.
    """
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        info = os.fstat(fd)
        private = stat.S_IMODE(info.st_mode) in (DIR_MODE, SHARED_DIR_MODE)
        if created or (info.st_uid == os.geteuid() and private):
            share(fd, gid, directory=True)
    finally:
        os.close(fd)


def ensure_directory(directory: Path, gid: int | None = None) -> None:
    """Create the log directory 0700 if missing (parents too); 0750 and group ``gid``
    with ``audit.file_group``.

    An existing directory is left as it is: tightening someone else's
    directory (``/var/log`` itself, say) is not ours to do.
    """
    created = not directory.exists()
    if directory.is_symlink():
        # A symlinked directory is fine (a bind of /var/log elsewhere) as long
        # as it resolves to a directory; the file itself is what O_NOFOLLOW guards.
        if not directory.resolve().is_dir():
            raise AuditFileError(f"{directory}: not a directory")
        return
    try:
        directory.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
    except OSError as exc:
        raise AuditFileError(
            f"{directory}: cannot create the audit directory: {exc.strerror}"
        ) from None
    if not directory.is_dir():
        raise AuditFileError(f"{directory}: not a directory")
    if gid is not None:
        try:
            _share_directory(directory, gid, created)
        except OSError as exc:
            raise AuditFileError(
                f"{directory}: cannot give the audit directory to audit.file_group: {exc.strerror}"
            ) from None


def _open_error(path: Path, exc: OSError) -> AuditFileError:
    if exc.errno == errno.ELOOP:
        return AuditFileError(
            f"{path}: is a symbolic link; refusing to write the audit log through it"
        )
    return AuditFileError(f"{path}: cannot open the audit log: {exc.strerror}")


def check_owner(path: Path, info: os.stat_result) -> None:
    """Refuse a file another user owns: its owner could rewrite the log under the writer
    (chmod it back and edit it), whatever mode the writer sets."""
    if info.st_uid != os.geteuid():
        raise AuditFileError(
            f"{path}: owned by uid {info.st_uid}, not by this writer (uid {os.geteuid()}); "
            "its owner could rewrite the log: remove it or chown it"
        )


def open_append(path: Path, gid: int | None = None) -> int:
    """Open ``path`` for appending, 0600 (0640 and group ``gid`` with ``audit.file_group``),
    refusing a symlink; returns the fd.

    An existing file with other permissions is set to those: an audit log
    readable by everyone is a finding of its own.
    """
    try:
        fd = os.open(path, OPEN_FLAGS, FILE_MODE)
    except OSError as exc:
        raise _open_error(path, exc) from None
    info = os.fstat(fd)
    try:
        if not stat.S_ISREG(info.st_mode):
            raise AuditFileError(f"{path}: not a regular file")
        check_owner(path, info)
    except AuditFileError:
        os.close(fd)
        raise
    try:
        share(fd, gid)
    except OSError as exc:
        os.close(fd)
        raise AuditFileError(f"{path}: cannot set the audit log's mode: {exc.strerror}") from None
    return fd


def holds(path: Path, fd: int) -> bool:
    """Whether ``path`` itself (not a symlink's target) is the file open as ``fd``."""
    try:
        here, ours = os.lstat(path), os.fstat(fd)
    except OSError:
        return False
    return (here.st_dev, here.st_ino) == (ours.st_dev, ours.st_ino)


def lock_path(live: Path) -> Path:
    """The lock file beside the live file: one writer per stream at a time."""
    return live.with_name(live.name + ".lock")


def lock_stream(live: Path, wait_s: float = 30.0) -> int:
    """Take the stream's writer lock (``flock`` on ``<live>.lock``, 0600); returns its fd.

    Two writers appending to one file would fork the chain. A writer that is
    finishing (an audit worker whose parent died hands over what it holds) gets
    ``wait_s`` to let go; then AuditFileError.
    """
    path = lock_path(live)
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, FILE_MODE)
    except OSError as exc:
        raise _open_error(path, exc) from None
    deadline = time.monotonic() + wait_s
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return fd
        except BlockingIOError:
            if time.monotonic() >= deadline:
                os.close(fd)
                raise AuditFileError(
                    f"{live}: another process is writing this audit log "
                    f"(it holds {path.name}); waited {wait_s:g}s"
                ) from None
            time.sleep(0.05)


def fsync_directory(directory: Path) -> None:
    """Make a rename or a new file in ``directory`` durable."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_all(fd: int, data: bytes | bytearray | memoryview) -> None:
    """Write all of ``data`` to ``fd`` (a file or pipe may take it in parts); raises ``OSError``."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def write_private(path: Path, data: bytes, mode: int = FILE_MODE) -> None:
    """Create ``path`` (must not exist) with ``data`` and exactly ``mode`` (0600), durably."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
    try:
        os.fchmod(fd, mode)  # the umask must not change what we promise
        write_all(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


def stamp(ns: int) -> str:
    """A UTC stamp that sorts by time and is safe in a file name: ``20261127T180000.123456Z``."""
    seconds, rest = divmod(ns, 1_000_000_000)
    return f"{time.strftime(_STAMP_FORMAT, time.gmtime(seconds))}.{rest // 1000:06d}Z"


def rotated_name(live: Path, ns: int) -> str:
    """The name a rotated file takes: ``<stem>-<stamp>.jsonl``, unique in its directory."""
    while True:
        name = f"{live.stem}-{stamp(ns)}{live.suffix}"
        # lexists: a dangling symlink planted at the name is a name taken, not a free one
        if not os.path.lexists(live.parent / name) and not os.path.lexists(
            live.parent / f"{name}.gz"
        ):
            return name
        ns += 1000  # one microsecond later: still sorts in rotation order


def rotated_files(live: Path) -> list[Path]:
    """Rotated files of ``live``'s stream, oldest first (plain and ``.gz``)."""
    pattern = re.compile(
        rf"^{re.escape(live.stem)}-[0-9]{{8}}T[0-9]{{6}}\.[0-9]{{6}}Z{re.escape(live.suffix)}(\.gz)?$"
    )
    try:
        names = [p for p in live.parent.iterdir() if pattern.match(p.name)]
    except FileNotFoundError:
        return []
    return sorted(names, key=lambda p: p.name.removesuffix(".gz"))


def renamed_files(live: Path) -> list[Path]:
    """Files that took the live file's name with a suffix, as logrotate renames without
    ``copytruncate`` (``<live>.1``, ``<live>.1.gz``, ``<live>-20261129``), sorted by name."""
    pattern = re.compile(rf"^{re.escape(live.name)}[.-][0-9][0-9._-]*(\.gz)?$")
    try:
        return sorted(p for p in live.parent.iterdir() if pattern.match(p.name))
    except FileNotFoundError:
        return []


def _read_whole(path: Path) -> bytes:
    if path.name.endswith(".gz"):
        with gzip.open(path, "rb") as handle:
            return handle.read()
    return path.read_bytes()


def compress(path: Path, gid: int | None = None) -> Path:
    """Gzip a rotated file atomically: ``X.gz.tmp`` written, fsynced, renamed; then ``X`` removed.

    A crash at any point leaves either the plain file or a complete ``.gz``
    (possibly both, which :func:`finish_compressions` settles), never a torn one.
    """
    target = path.with_name(path.name + ".gz")
    tmp = path.with_name(path.name + ".gz.tmp")
    # The rotated file itself, never what a symlink put in its place points to.
    source_fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    with os.fdopen(source_fd, "rb") as source:
        if not stat.S_ISREG(os.fstat(source.fileno()).st_mode):
            raise OSError(errno.EINVAL, f"{path}: not a regular file; not compressed")
        tmp.unlink(missing_ok=True)
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        fd = os.open(tmp, flags, FILE_MODE)
        share(fd, gid)
        with os.fdopen(fd, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as gz:
            shutil.copyfileobj(source, gz, 1 << 20)
            gz.close()
            raw.flush()
            os.fsync(raw.fileno())
    os.rename(tmp, target)
    fsync_directory(path.parent)
    path.unlink()
    fsync_directory(path.parent)
    return target


def finish_compressions(live: Path) -> list[Path]:
    """Settle what a crash left mid-compression and return rotated files still to compress."""
    for tmp in live.parent.glob(f"{live.stem}-*{live.suffix}.gz.tmp"):
        tmp.unlink(missing_ok=True)
    pending = []
    for path in rotated_files(live):
        if path.name.endswith(".gz"):
            continue
        if path.with_name(path.name + ".gz").exists():
            path.unlink()  # the .gz was renamed into place, so it is complete
        else:
            pending.append(path)
    return pending


def apply_retention(live: Path, max_backups: int, max_age_days: float, now: float) -> list[Path]:
    """Delete rotated files beyond ``max_backups`` or older than ``max_age_days`` (0 = keep)."""
    files = rotated_files(live)
    doomed: list[Path] = []
    if max_backups > 0 and len(files) > max_backups:
        doomed.extend(files[: len(files) - max_backups])
    if max_age_days > 0:
        limit = now - max_age_days * 86400
        for path in files:
            if path not in doomed and path.stat().st_mtime < limit:
                doomed.append(path)
    for path in doomed:
        path.unlink(missing_ok=True)
    if doomed:
        fsync_directory(live.parent)
    return doomed
