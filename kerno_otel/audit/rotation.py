"""Rotation on disk: the live file renamed aside, a new one opened, the old one compressed
and old ones retired, off the writer's hot loop and never through a symlink."""

from __future__ import annotations

import errno
import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TextIO

from kerno_otel.audit import files
from kerno_otel.audit.counters import Counters
from kerno_otel.config import AuditConfig


class Rotator:
    """Renames, reopens, compresses (one file at a time, on a thread of its own) and
    applies retention for one live file. Called from the writer thread."""

    def __init__(self, live: Path, config: AuditConfig, stderr: TextIO, counters: Counters):
        self.live = live
        self.config = config
        self._stderr = stderr
        self._counters = counters
        group = config.file_group
        self._gid = None if group is None else files.group_id(group)
        self._gzip = (
            ThreadPoolExecutor(1, thread_name_prefix="kerno-audit-gzip")
            if config.compress
            else None
        )

    def start(self) -> None:
        """Compress what a previous run rotated but did not get to compress."""
        if self._gzip is not None:
            for pending in files.finish_compressions(self.live):
                self._gzip.submit(self._compress, pending)

    def close(self) -> None:
        if self._gzip is not None:
            self._gzip.shutdown(wait=True)

    def rotate(self, fd: int, name: str) -> int | None:
        """Rename the live file (open as ``fd``, already synced) to ``name`` and open a new
        one; the new descriptor, or None when the writer should go on with ``fd``.

        The path is renamed only while it still holds the file open as ``fd``: a
        symlink (or any other file) planted there is never renamed, read or
        compressed. When the rotation cannot happen, it says so; nothing is lost.
        """
        target = self.live.parent / name
        try:
            if not files.holds(self.live, fd):
                raise OSError(errno.ESTALE, "the path no longer holds the file being written")
            os.rename(self.live, target)
        except OSError as exc:
            self._counters.write_errors += 1
            self._stderr.write(
                f"kerno-otel: audit: cannot rotate {self.live}: {exc.strerror or exc}; "
                "writing on in the current file\n"
            )
            return None
        try:
            new = files.open_append(self.live, self._gid)
        except OSError as exc:  # the renamed file stays open: records go on there
            self._counters.write_errors += 1
            self._stderr.write(
                f"kerno-otel: audit: cannot open a new {self.live} after rotating: {exc}; "
                f"writing on in {target.name}\n"
            )
            return None
        os.close(fd)
        files.fsync_directory(self.live.parent)
        self._counters.rotations += 1
        if self._gzip is not None:
            self._gzip.submit(self._compress, target)
        else:
            self._retention()
        return new

    def _compress(self, path: Path) -> None:
        try:
            files.compress(path, self._gid)
            self._retention()
        except OSError as exc:
            self._stderr.write(f"kerno-otel: audit: cannot compress {path}: {exc}\n")

    def _retention(self) -> None:
        config = self.config
        if config.max_backups or config.max_age_days:
            files.apply_retention(self.live, config.max_backups, config.max_age_days, time.time())
