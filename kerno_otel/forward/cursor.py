"""The forwarder's persistent cursor and its reader: where in the audit files shipping stands.

The cursor names a file by its identity (``line_hash`` of its first line: the
seq-0 line or the ``audit.rotate`` that opens it, unique in a stream and the
same whether the file is live, rotated or gzipped), the byte offset in that
file's uncompressed content up to which the collector acknowledged, and the
seq and hash of the last acknowledged line. It lives beside the log as
``<live>.cursor`` (0600), replaced atomically: tmp + fsync + rename + fsync of
the directory, so a crash leaves the old cursor or the new one.

The reader follows the stream across rotations without a gap: the writer
renames the live file only after its last write, so once the file being read
shows up under a rotated name (its identity is no longer the live file's),
one more read to end of file gets everything it will ever hold, and the next
file in rotation order follows.
"""

from __future__ import annotations

import contextlib
import gzip
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO, Any, cast

import orjson

from kerno_otel.audit import files as _files
from kerno_otel.audit import stream as _stream
from kerno_otel.audit.chain import line_hash

_CHUNK = 1 << 20
#: How long a file the reader was in may be missing from the directory before it is taken
#: as gone: a deleted live file is copied back by the writer within about 0.5 s.
MISSING_WAIT_S = 5.0


@dataclass(frozen=True)
class Cursor:
    """Where shipping stands: everything up to ``offset`` of file ``file`` is acknowledged."""

    file: str | None = None
    offset: int = 0
    last_seq: int | None = None
    last_hash: str | None = None

    @staticmethod
    def path_for(live: Path) -> Path:
        return live.with_name(live.name + ".cursor")

    @classmethod
    def load(cls, path: Path) -> Cursor:
        """The saved cursor, or the start of the stream when there is none.

        Raises ``ValueError`` naming the file when it exists but is not a cursor.
        """
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return cls()
        try:
            raw = orjson.loads(data)
            cursor = cls(
                file=raw["file"],
                offset=int(raw["offset"]),
                last_seq=raw["last_seq"],
                last_hash=raw["last_hash"],
            )
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            raise ValueError(f"{path}: not a forwarder cursor; move it aside to re-send") from None
        return cursor

    def save(self, path: Path) -> None:
        """Replace the cursor file atomically (0600)."""
        tmp = path.with_name(path.name + ".tmp")
        tmp.unlink(missing_ok=True)
        _files.write_private(tmp, orjson.dumps(asdict(self)) + b"\n")
        os.rename(tmp, path)
        _files.fsync_directory(path.parent)


@dataclass(frozen=True)
class Line:
    """One line read, with where it ends in its file (what the cursor becomes once acked)."""

    data: bytes
    file: str
    end: int


def seq_of(line: bytes) -> int | None:
    """The ``seq`` of one line, None when it is not a record with one."""
    try:
        record = orjson.loads(line)
    except orjson.JSONDecodeError:
        return None
    seq = record.get("seq") if isinstance(record, dict) else None
    return seq if isinstance(seq, int) else None


class StreamReader:
    """Reads whole lines of a stream in order from a cursor, across rotations and gzip."""

    def __init__(self, live: Path, cursor: Cursor, warn: Any = None) -> None:
        self.live = live
        self._warn = warn if warn is not None else (lambda message: None)
        self._ids: dict[str, str] = {}  # rotated file key -> identity (they never change)
        self._handle: IO[bytes] | None = None
        self._path: Path | None = None
        self._file: str | None = cursor.file
        self._pos = cursor.offset  # offset of the end of the last line handed out
        self._buffer = b""
        self._skip_through = cursor.last_seq if cursor.file is None else None
        self._cursor = cursor
        self._handed: bytes | None = None  # the last line handed out
        self._seen = False  # whether self._file was found in a listing by this reader
        self._missing_since: float | None = None

    # -- files ----------------------------------------------------------------------

    def _files(self) -> list[tuple[Path, str | None]]:
        """(path, identity) of every file of the stream, oldest first, the live file last."""
        by_key: dict[str, Path] = {}
        for path in _files.rotated_files(self.live):
            key = path.name.removesuffix(".gz")
            # Mid-compression both exist; the .gz is complete once it has its name.
            if key not in by_key or path.name.endswith(".gz"):
                by_key[key] = path
        out: list[tuple[Path, str | None]] = []
        for key, path in sorted(by_key.items()):
            ident = self._ids.get(key)
            if ident is None:
                line = _stream.first_line(path)
                if line is not None:
                    ident = self._ids[key] = line_hash(line)
            out.append((path, ident))
        line = _stream.first_line(self.live)
        out.append((self.live, line_hash(line) if line is not None else None))
        return out

    def _open(self, path: Path, ident: str, offset: int) -> bool:
        """Open file ``ident`` (found at ``path``) at ``offset``.

        The name may have moved on since the listing (a rotation renames the
        live file, the compressor replaces a rotated one), so the opened file's
        first line must still be ``ident``; if not, nothing is opened and the
        next read looks ``ident`` up again.
        """
        self.close()
        self._file, self._pos, self._buffer = ident, offset, b""
        self._seen = True  # every caller found ``ident`` in a listing
        try:
            # Kept open across reads (closed in close()), hence no context manager.
            if path.name.endswith(".gz"):
                handle = cast(IO[bytes], gzip.open(path, "rb"))  # noqa: SIM115
            else:
                handle = open(path, "rb")  # noqa: SIM115
            first = handle.readline()
            if not first.endswith(b"\n") or line_hash(first[:-1]) != ident:
                handle.close()
                return False
            handle.seek(offset)
        except (OSError, EOFError):
            return False
        self._handle, self._path = handle, path
        return True

    def _locate(self) -> bool:
        """Open the file the cursor points into; False when there is nothing to read yet."""
        files = self._files()
        if self._file is not None:
            # Twice: a listing taken mid-rename (rotation, compression) can miss a file.
            for attempt in range(2):
                if attempt:
                    files = self._files()
                for path, ident in files:
                    if ident == self._file:
                        self._missing_since = None
                        return self._open(path, ident, self._pos)
            if self._seen:
                # A file this reader was in: a deleted live file is missing until the
                # writer has copied it back under a rotated name. Wait for it a while.
                now = time.monotonic()
                if self._missing_since is None:
                    self._missing_since = now
                if now - self._missing_since < MISSING_WAIT_S:
                    return False
            # The file is gone (retention, or moved away): find the seq instead, after
            # the last line handed out (or acknowledged before this reader started).
            handed = seq_of(self._handed) if self._handed is not None else None
            last = handed if handed is not None else self._cursor.last_seq
            self._missing_since = None
            self._warn(f"the file the cursor points into is gone; resuming after seq {last}")
            self._file = None
            self._skip_through = last
        want = None if self._skip_through is None else self._skip_through + 1
        start: tuple[Path, str] | None = None
        for path, ident in files:
            if ident is None:
                continue
            if start is None:
                start = (path, ident)
            line = _stream.first_line(path)
            first = seq_of(line) if line is not None else None
            if want is not None and first is not None and first <= want:
                start = (path, ident)
        if start is None:
            return False
        return self._open(start[0], start[1], 0)

    def _still_live(self) -> bool:
        """Whether the file being read is still the live file (cheap: one stat, no listing)."""
        if self._path != self.live or self._handle is None or not hasattr(self._handle, "raw"):
            return False
        try:
            return os.stat(self.live).st_ino == os.fstat(self._handle.fileno()).st_ino
        except OSError:
            return False

    def _next_file(self) -> bool:
        """Move past a finished file; False when the current file is still the live one."""
        if self._still_live():
            return False
        files = self._files()
        for index, (_, ident) in enumerate(files):
            if ident == self._file:
                if index + 1 >= len(files):
                    return False
                # Rotated: whatever it will ever hold is there now (see the module doc).
                path, nxt = files[index + 1]
                if nxt is None:
                    return False  # the new live file has no first line yet
                return self._drained() and self._switch(path, nxt)
        return False

    def _drained(self) -> bool:
        """Read the rest of the current (rotated) file into the buffer."""
        assert self._handle is not None
        while True:
            data = self._handle.read(_CHUNK)
            if not data:
                return True
            self._buffer += data

    def _switch(self, path: Path, ident: str) -> bool:
        if self._buffer:
            return True  # hand out what the old file still held first
        return self._open(path, ident, 0)

    # -- reading --------------------------------------------------------------------

    def read(self, limit: int) -> list[Line]:
        """Up to ``limit`` whole lines after the last one handed out (none: nothing new)."""
        out: list[Line] = []
        for _ in range(64):  # bounded: rotated files in a row, or more data in a busy file
            if self._handle is None and not self._locate():
                return out
            assert self._handle is not None and self._file is not None
            if b"\n" not in self._buffer:
                try:
                    data = self._handle.read(_CHUNK)
                except (OSError, EOFError) as exc:
                    self._warn(f"cannot read {self._path}: {exc}")
                    self.close()
                    return out
                self._buffer += data
            if b"\n" not in self._buffer:
                if self._buffer and self._path != self.live:
                    # A rotated file never ends mid-line; ship the stray bytes anyway.
                    self._buffer += b"\n"
                    continue
                if out or not self._next_file():
                    return out
                continue
            self._take(out, limit)
            if len(out) >= limit:
                return out
        return out

    def _take(self, out: list[Line], limit: int) -> None:
        buffer, pos, file = self._buffer, self._pos, self._file
        assert file is not None
        start = 0
        while len(out) < limit:
            end = buffer.find(b"\n", start)
            if end < 0:
                break
            line = buffer[start:end]
            start = end + 1
            if self._skip_through is not None:
                seq = seq_of(line)
                if seq is not None and seq <= self._skip_through:
                    continue
                self._skip_through = None
            out.append(Line(line, file, pos + start))
        if out:
            self._handed = out[-1].data
        self._buffer = buffer[start:]
        self._pos = pos + start

    def rewind(self, cursor: Cursor) -> None:
        """Go back to ``cursor`` (lines read after it were not acknowledged)."""
        self.close()
        self._cursor = cursor
        self._file, self._pos, self._buffer = cursor.file, cursor.offset, b""
        self._skip_through = cursor.last_seq if cursor.file is None else None
        self._handed, self._seen, self._missing_since = None, False, None

    def close(self) -> None:
        if self._handle is not None:
            with contextlib.suppress(OSError):
                self._handle.close()
        self._handle = None


def last_seq_on_disk(live: Path) -> int | None:
    """The seq of the stream's last whole line (live file, else the newest rotated one)."""
    found = _stream.last_whole_line(live)
    return seq_of(found[1]) if found is not None else None
