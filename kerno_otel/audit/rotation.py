"""After a rotation: the old file compressed and old ones retired, off the writer's hot loop.

The rename and the new file are the sealer's (``livefile.LiveFile.rotate``, relative to the
directory's fd, never through a symlink); the writer calls :meth:`Rotator.switched` once it
has finished with the old file."""

from __future__ import annotations

import contextlib
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TextIO

from kerno_otel.audit import files
from kerno_otel.audit.counters import Counters
from kerno_otel.config import AuditConfig


class Rotator:
    """Compresses rotated files (one at a time, on a thread of its own) and applies
    retention for one live file. Called from the writer thread."""

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

    def switched(self, rotated: str | None) -> None:
        """The writer went on in a new live file (the old one synced and closed). ``rotated``:
        the name the sealer rotated the old one to; None when someone else moved it away."""
        with contextlib.suppress(OSError):
            files.fsync_directory(self.live.parent)
        if rotated is None:
            return
        self._counters.rotations += 1
        if self._gzip is not None:
            self._gzip.submit(self._compress, self.live.parent / rotated)
        else:
            self._retention()

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
