"""Opening a stream: the writer lock, a repaired torn tail, where seq and chain resume, the id."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from kerno_otel.audit import files
from kerno_otel.audit.checkpoints import read_sidecar, sidecar_path


@dataclass(frozen=True)
class OpenStream:
    """What a sealer needs to continue a stream: open descriptors and where it stands."""

    fd: int
    lock_fd: int
    sidecar_fd: int | None
    point: files.ResumePoint
    #: ``line_hash`` of the stream's seq-0 line (None for a stream with no line yet).
    stream_id: str | None

    def close_lock(self) -> None:
        """Let the next writer start (after the file is closed)."""
        os.close(self.lock_fd)


def open_stream(live: Path, now_ns: int, *, checkpoints: bool) -> OpenStream:
    """Lock ``live``'s stream, repair a torn tail and open the live file (and the checkpoints
    file when ``checkpoints``) for appending.

    Raises :class:`kerno_otel.audit.files.AuditFileError` when the file cannot be
    used safely (a symlink, a directory, a last line that is not a record).
    """
    files.ensure_directory(live.parent)
    lock_fd = files.lock_stream(live)
    try:
        point = files.repair_and_resume(live, now_ns)
        sidecar_fd = files.open_append(sidecar_path(live)) if checkpoints else None
        fd = files.open_append(live)
    except BaseException:
        os.close(lock_fd)
        raise
    stream_id = None
    if point.last_seq is not None and point.last_hash is not None:
        # A stream written before stream ids existed, whose seq-0 file is gone, is
        # named after the line where its checkpoints begin (then carried onwards).
        stream_id = files.find_stream_id(live) or _sidecar_stream(live) or point.last_hash
    return OpenStream(fd, lock_fd, sidecar_fd, point, stream_id)


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
