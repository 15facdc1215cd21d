"""The audit log's files: safe opening, torn-tail repair, rotated names, compression and retention.

Everything here runs either before the writer thread starts or on the writer
thread itself (rotation), or on the compressor thread (after the fact); none of
it is on the emitting thread's path.
"""

from __future__ import annotations

import errno
import fcntl
import gzip
import hashlib
import os
import re
import shutil
import stat
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import orjson

from kerno_otel.audit.chain import line_hash

#: Opening flags of the live file: append-only, never through a symlink.
OPEN_FLAGS: Final = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
FILE_MODE: Final = 0o600
DIR_MODE: Final = 0o700

_STAMP_FORMAT: Final = "%Y%m%dT%H%M%S"


class AuditFileError(OSError):
    """The audit log's file or directory cannot be used safely; the message says which and why."""


def ensure_directory(directory: Path) -> None:
    """Create the log directory 0700 if missing (parents too).

    An existing directory is left as it is: tightening someone else's
    directory (``/var/log`` itself, say) is not ours to do.
    """
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


def _open_error(path: Path, exc: OSError) -> AuditFileError:
    if exc.errno == errno.ELOOP:
        return AuditFileError(
            f"{path}: is a symbolic link; refusing to write the audit log through it"
        )
    return AuditFileError(f"{path}: cannot open the audit log: {exc.strerror}")


def open_append(path: Path) -> int:
    """Open ``path`` for appending, 0600, refusing a symlink; returns the fd.

    An existing file with looser permissions is tightened to 0600: an audit
    log readable by everyone is a finding of its own.
    """
    try:
        fd = os.open(path, OPEN_FLAGS, FILE_MODE)
    except OSError as exc:
        raise _open_error(path, exc) from None
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        os.close(fd)
        raise AuditFileError(f"{path}: not a regular file")
    if stat.S_IMODE(info.st_mode) != FILE_MODE:
        os.fchmod(fd, FILE_MODE)
    return fd


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
        if not (live.parent / name).exists() and not (live.parent / f"{name}.gz").exists():
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


@dataclass(frozen=True)
class TornTail:
    """What a crash left after the last whole line, now set aside."""

    bytes: int
    digest: str
    set_aside: Path


@dataclass(frozen=True)
class ResumePoint:
    """Where an existing stream stands: its last whole line, and any torn tail repaired."""

    last_seq: int | None
    last_hash: str | None
    live_size: int
    torn: TornTail | None


def _last_line(data: bytes) -> bytes | None:
    """The last ``\\n``-terminated line of ``data`` (without the newline), or None."""
    if not data:
        return None
    end = len(data) - 1 if data.endswith(b"\n") else data.rfind(b"\n")
    if end < 0:
        return None
    start = data.rfind(b"\n", 0, end) + 1
    return data[start:end]


def _read_tail(fd: int, size: int, chunk: int = 65536) -> tuple[bytes, int]:
    """Bytes from the start of the last whole line to the end of the file, and their offset.

    Reads backwards in growing chunks until the tail holds one complete line
    (or the whole file).
    """
    offset = size
    data = b""
    while offset > 0:
        step = min(chunk, offset)
        offset -= step
        data = os.pread(fd, step, offset) + data
        cut = data.rstrip(b"\n") if data.endswith(b"\n") else data
        # one newline before the last whole line's start, or we've reached the beginning
        if cut.count(b"\n") >= 2 or (data.endswith(b"\n") and cut.count(b"\n") >= 1):
            break
        chunk *= 2
    return data, offset


def _describe(path: Path, line: bytes) -> tuple[int, str]:
    try:
        record = orjson.loads(line)
    except orjson.JSONDecodeError:
        record = None
    if not isinstance(record, dict) or not isinstance(record.get("seq"), int):
        raise AuditFileError(
            f"{path}: the last whole line is not an audit record with a seq; "
            "refusing to continue a stream that cannot be chained (move the file aside)"
        )
    return record["seq"], line_hash(line)


def repair_and_resume(live: Path, now_ns: int) -> ResumePoint:
    """Repair a torn last line of ``live`` and find where its stream stands.

    A torn tail (bytes after the last ``\\n``: the process died mid-write) is
    copied to ``<live>.torn-<stamp>`` (0600) and cut from the live file, so the
    chain continues from the last whole line. When the live file is missing or
    empty, the newest rotated file tells where the stream stands (a crash
    right after a rotation).
    """
    torn: TornTail | None = None
    size = 0
    last: tuple[int, str] | None = None
    try:
        fd = os.open(live, os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        fd = -1
    except OSError as exc:
        raise _open_error(live, exc) from None
    if fd >= 0:
        try:
            size = os.fstat(fd).st_size
            if size:
                data, offset = _read_tail(fd, size)
                if not data.endswith(b"\n"):
                    cut = data.rfind(b"\n") + 1
                    fragment = data[cut:]
                    aside = live.with_name(f"{live.name}.torn-{stamp(now_ns)}")
                    write_private(aside, fragment)
                    os.ftruncate(fd, offset + cut)
                    os.fsync(fd)
                    size = offset + cut
                    torn = TornTail(
                        len(fragment), "sha256:" + hashlib.sha256(fragment).hexdigest(), aside
                    )
                    data = data[:cut]
                line = _last_line(data)
                if line is not None:
                    last = _describe(live, line)
        finally:
            os.close(fd)
    if last is None:
        found = _newest_rotated_line(live)
        if found is not None:
            last = _describe(*found)
    if last is None:
        return ResumePoint(None, None, size, torn)
    return ResumePoint(last[0], last[1], size, torn)


def _newest_rotated_line(live: Path) -> tuple[Path, bytes] | None:
    """The last whole line of the newest rotated file that has one, and that file."""
    for older in reversed(rotated_files(live)):
        # No skipping an unreadable file: resuming from an older one would reuse seqs.
        line = _last_line(_read_whole(older))
        if line is not None:
            return older, line
    return None


def last_whole_line(live: Path) -> tuple[Path, bytes] | None:
    """The stream's last whole line (read-only): the live file's, else the newest rotated one's.

    What :func:`repair_and_resume` finds, without repairing anything; a torn
    tail is simply not a whole line.
    """
    try:
        fd = os.open(live, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        fd = -1
    if fd >= 0:
        try:
            size = os.fstat(fd).st_size
            line = _last_line(_read_tail(fd, size)[0]) if size else None
        finally:
            os.close(fd)
        if line is not None:
            return live, line
    try:
        return _newest_rotated_line(live)
    except (OSError, EOFError):
        return None


def first_line(path: Path) -> bytes | None:
    """The first whole line of ``path`` (plain or ``.gz``, no newline); None when it has none."""
    try:
        if path.name.endswith(".gz"):
            with gzip.open(path, "rb") as handle:
                line = handle.readline()
        else:
            with open(path, "rb") as handle:
                line = handle.readline()
    except (OSError, EOFError):
        return None
    return line[:-1] if line.endswith(b"\n") else None


def stream_of_line(line: bytes) -> str | None:
    """The stream id a file's first line tells: its own hash at seq 0, else ``details.stream``."""
    try:
        record = orjson.loads(line)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(record, dict):
        return None
    if record.get("seq") == 0:
        return line_hash(line)
    details = record.get("details")
    stream = details.get("stream") if isinstance(details, dict) else None
    return stream if isinstance(stream, str) else None


def find_stream_id(live: Path) -> str | None:
    """The id of ``live``'s stream: the ``line_hash`` of its seq-0 line.

    Every file of a stream starts with either that line or an ``audit.rotate``
    carrying the id in ``details.stream``, so the first line of the live file
    (or of the newest rotated one) is enough. Streams written before the id
    existed are found by their seq-0 line in the oldest rotated file; None when
    nothing tells.
    """
    candidates = [live, *reversed(rotated_files(live))]
    for path in candidates:
        line = first_line(path)
        if line is not None:
            found = stream_of_line(line)
            if found is not None:
                return found
            break
    for path in rotated_files(live)[:1]:
        line = first_line(path)
        if line is not None and line.startswith(b'{"v":"1","seq":0,'):
            return line_hash(line)
    return None


def _read_whole(path: Path) -> bytes:
    if path.name.endswith(".gz"):
        with gzip.open(path, "rb") as handle:
            return handle.read()
    return path.read_bytes()


def compress(path: Path) -> Path:
    """Gzip a rotated file atomically: ``X.gz.tmp`` written, fsynced, renamed; then ``X`` removed.

    A crash at any point leaves either the plain file or a complete ``.gz``
    (possibly both, which :func:`finish_compressions` settles), never a torn one.
    """
    target = path.with_name(path.name + ".gz")
    tmp = path.with_name(path.name + ".gz.tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(
        tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, FILE_MODE
    )
    with os.fdopen(fd, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as gz:
        with open(path, "rb") as source:
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
