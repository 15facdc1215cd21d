"""Opening a stream: the writer lock, a repaired torn tail, where seq and chain resume, the id."""

from __future__ import annotations

import gzip
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import orjson

from kerno_otel.audit import files
from kerno_otel.audit.chain import line_hash
from kerno_otel.audit.checkpoints import read_sidecar, sidecar_path
from kerno_otel.audit.files import (
    AuditFileError,
    _open_error,
    _read_whole,
    rotated_files,
    stamp,
    write_private,
)
from kerno_otel.audit.livefile import LiveFile


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
    #: The file the stream resumes from when someone else renamed the live file to it
    #: (logrotate without ``copytruncate``): the new live file must name it.
    renamed_from: Path | None = None
    #: The live file was not there but the stream's rotated files were: the live file
    #: that followed the newest of them was deleted (or moved away) while no writer held
    #: it, and its records with it. The new live file must say so.
    live_missing: bool = False


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
    right after a rotation); its own torn tail, if any, is cut the same way (the
    writer finishes the records queued before a rotation in the renamed file).
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
                data, size, torn = _cut_torn_tail(live, fd, size, now_ns)
                line = _last_line(data)
                if line is not None:
                    last = _describe(live, line)
        finally:
            os.close(fd)
    if last is None and torn is None:
        # Killed between a rotation's rename and the writer's switch to the new file:
        # the rotated file took the last writes, and may end torn.
        torn = _repair_newest_rotated(live, now_ns)
    renamed_from = None
    live_missing = False
    if last is None:
        found = _newest_rotated_line(live)
        if found is not None:
            last = _describe(*found)
        renamed = _newest_renamed_line(live, last[0] if last is not None else -1)
        if renamed is not None:
            renamed_from, line = renamed
            last = _describe(renamed_from, line)
        # Every rotation opens the next live file at once, so rotated files without one
        # mean it was removed (only a kill between the rename and that open, a few
        # microseconds, leaves the same sight with nothing lost).
        live_missing = fd < 0 and found is not None and renamed is None
    if last is None:
        return ResumePoint(None, None, size, torn)
    return ResumePoint(last[0], last[1], size, torn, renamed_from, live_missing)


def _cut_torn_tail(
    path: Path, fd: int, size: int, now_ns: int
) -> tuple[bytes, int, TornTail | None]:
    """The tail of ``path`` (open as ``fd``, ``size`` bytes) up to its last whole line, the
    size it is cut to, and what was cut: set aside in ``<name>.torn-<stamp>`` (0600)."""
    data, offset = _read_tail(fd, size)
    if data.endswith(b"\n"):
        return data, size, None
    cut = data.rfind(b"\n") + 1
    fragment = data[cut:]
    aside = path.with_name(f"{path.name}.torn-{stamp(now_ns)}")
    write_private(aside, fragment)
    os.ftruncate(fd, offset + cut)
    os.fsync(fd)
    digest = "sha256:" + hashlib.sha256(fragment).hexdigest()
    return data[:cut], offset + cut, TornTail(len(fragment), digest, aside)


def _repair_newest_rotated(live: Path, now_ns: int) -> TornTail | None:
    """Cut a torn tail from the newest rotated file, when it is a plain file."""
    rotated = rotated_files(live)
    if not rotated or rotated[-1].name.endswith(".gz"):
        return None  # compressed only once whole
    newest = rotated[-1]
    try:
        fd = os.open(newest, os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return None  # read (or refused) as it is by what follows
    try:
        size = os.fstat(fd).st_size
        return _cut_torn_tail(newest, fd, size, now_ns)[2] if size else None
    finally:
        os.close(fd)


def _newest_renamed_line(live: Path, above: int) -> tuple[Path, bytes] | None:
    """The last whole line, and its file, of the file renamed from the live one (see
    :func:`files.renamed_files`) that reaches furthest past seq ``above``, if any.

    A live file renamed while the writer was down (or before it noticed) holds the
    stream's newest records: starting over, or from an older rotated file, would
    fork the chain. Files that cannot be read or whose last line is not a record
    are not the stream's and are passed over.
    """
    best: tuple[Path, bytes] | None = None
    for path in files.renamed_files(live):
        try:
            line = _last_line(_read_whole(path))
            record = orjson.loads(line) if line is not None else None
        except (OSError, EOFError, ValueError, orjson.JSONDecodeError):
            continue
        seq = record.get("seq") if isinstance(record, dict) else None
        if isinstance(seq, int) and seq > above and line is not None:
            best, above = (path, line), seq
    return best


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


def find_stream_id(live: Path, resumed_from: Path | None = None) -> str | None:
    """The id of ``live``'s stream: the ``line_hash`` of its seq-0 line.

    Every file of a stream starts with either that line or an ``audit.rotate``
    carrying the id in ``details.stream``, so the first line of the live file
    (or of the newest rotated one) is enough. Streams written before the id
    existed are found by their seq-0 line in the oldest rotated file; None when
    nothing tells.
    """
    candidates = [live, *([resumed_from] if resumed_from else []), *reversed(rotated_files(live))]
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


@dataclass(frozen=True)
class OpenStream:
    """What a sealer needs to continue a stream: open descriptors and where it stands."""

    fd: int
    lock_fd: int
    sidecar_fd: int | None
    point: ResumePoint
    #: ``line_hash`` of the stream's seq-0 line (None for a stream with no line yet).
    stream_id: str | None
    #: The live file and its directory, by descriptor.
    live: LiveFile

    def close_lock(self) -> None:
        """Let the next writer start (after the file is closed)."""
        self.live.close()
        os.close(self.lock_fd)


def open_stream(
    live: Path, now_ns: int, *, checkpoints: bool, gid: int | None = None
) -> OpenStream:
    """Lock ``live``'s stream, repair a torn tail and open the live file (and the checkpoints
    file when ``checkpoints``) for appending.

    ``gid`` is ``audit.file_group``'s (the files 0640 and the directory 0750, that group).
    Raises :class:`kerno_otel.audit.files.AuditFileError` when the file cannot be
    used safely (a symlink, a directory, a last line that is not a record).
    """
    files.ensure_directory(live.parent, gid)
    lock_fd = files.lock_stream(live)
    try:
        point = repair_and_resume(live, now_ns)
        sidecar_fd = files.open_append(sidecar_path(live), gid) if checkpoints else None
        handle = LiveFile(live, gid)
        try:
            fd = handle.open()
        except BaseException:
            handle.close()
            raise
    except BaseException:
        os.close(lock_fd)
        raise
    stream_id = None
    if point.last_seq is not None and point.last_hash is not None:
        # A stream written before stream ids existed, whose seq-0 file is gone, is
        # named after the line where its checkpoints begin (then carried onwards).
        stream_id = (
            find_stream_id(live, point.renamed_from) or _sidecar_stream(live) or point.last_hash
        )
    return OpenStream(fd, lock_fd, sidecar_fd, point, stream_id, handle)


def _sidecar_stream(live: Path) -> str | None:
    """The stream id of the last checkpoint in the checkpoints file, if any."""
    found = None
    try:
        for _, item in read_sidecar(sidecar_path(live)):
            if item is not None and isinstance(item.get("stream"), str):
                found = item["stream"]
    except OSError:
        return None
    return found
