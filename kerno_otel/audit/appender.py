"""The writer thread's file side: whole appends to the live file, fsyncs, the checkpoints file.

A batch lands whole or not at all: a failed write is cut back to the last whole line
and then handled as ``on_write_error`` says (retry and block, drop, or stop the
process). The queue, the thread and the durability tickets are the
:class:`~kerno_otel.audit.writer.Writer`'s; it is told of every batch dropped
(``on_drop``) and keeps it as a write loss.
"""

from __future__ import annotations

import contextlib
import errno
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import TextIO

from kerno_otel.audit import files as _files
from kerno_otel.audit.counters import Counters
from kerno_otel.config import AuditConfig


class Appender:
    """Owns the live file's descriptor and the checkpoints file's; the writer thread's alone."""

    def __init__(
        self,
        live: Path,
        fd: int,
        config: AuditConfig,
        *,
        stderr: TextIO,
        counters: Counters,
        exit_process: Callable[[int], None],
        sidecar_fd: int | None,
        stopping: Callable[[], bool],
        on_drop: Callable[[int, str], None],
    ) -> None:
        self.live = live
        self.config = config
        self._fd = fd
        self._size = os.fstat(fd).st_size
        self._sidecar_fd = sidecar_fd
        self._stderr = stderr
        self.counters = counters
        self._exit = exit_process
        #: Whether the writer is closing: a blocked write then gives up after its backoff peaks.
        self._stopping = stopping
        #: Called with the count and the errno name of lines dropped (``on_write_error: drop``).
        self._on_drop = on_drop
        self._last_alarm = 0.0
        #: Why writing fails (``on_write_error: block``, retrying), or None while it works.
        self.failed: str | None = None

    def append(self, data: bytes, count: int) -> bool:
        """Append ``data`` (``count`` lines) whole, following ``on_write_error``; False
        when it was dropped."""
        backoff = 0.05
        while True:
            before = self._size
            try:
                _files.write_all(self._fd, data)
                self._size = before + len(data)
                if self.failed is not None:
                    self._stderr.write(f"kerno-otel: audit: writing to {self.live} works again\n")
                    self.failed = None
                return True
            except OSError as exc:
                self.counters.write_errors += 1
                # Never leave half a batch behind: cut back to the last whole line.
                with contextlib.suppress(OSError):
                    os.ftruncate(self._fd, before)
                reason = errno.errorcode.get(exc.errno or 0, "EIO")
                message = f"{reason} ({exc.strerror})"
                if self.config.on_write_error == "exit":
                    self._stderr.write(
                        f"kerno-otel: audit: cannot write to {self.live}: {message}; "
                        "on_write_error is 'exit': stopping\n"
                    )
                    self._stderr.flush()
                    self._exit(74)  # EX_IOERR
                    return False
                if self.config.on_write_error == "drop":
                    self._on_drop(count, reason)
                    self.counters.dropped("write_error", count)
                    self._stderr.write(
                        f"kerno-otel: audit: cannot write to {self.live}: {message}; "
                        f"dropped {count} records (on_write_error: drop)\n"
                    )
                    return False
                now = time.monotonic()
                if self.failed is None or now - self._last_alarm >= 10:
                    self._stderr.write(
                        f"kerno-otel: audit: cannot write to {self.live}: {message}; "
                        "retrying, emitters will block (on_write_error: block)\n"
                    )
                    self._last_alarm = now
                self.failed = message
                if self._stopping() and backoff >= 2.0:
                    return False  # close() gives up; it reports the unwritten count
                time.sleep(backoff)
                backoff = min(backoff * 2, 2.0)

    def append_checkpoint(self, data: bytes) -> None:
        """Append one checkpoint to the checkpoints file after making the log line durable."""
        if self._sidecar_fd is None:
            return
        if self.config.fsync != "never":
            self.sync()
        try:
            _files.write_all(self._sidecar_fd, data + b"\n")
            if self.config.fsync != "never":
                os.fsync(self._sidecar_fd)
        except OSError as exc:
            self.counters.write_errors += 1
            self._stderr.write(
                f"kerno-otel: audit: cannot write the checkpoints file of {self.live}: "
                f"{exc.strerror}\n"
            )

    def sync(self) -> None:
        """fsync the live file, timed into the counters; a failure is counted and said."""
        start = time.perf_counter()
        try:
            os.fsync(self._fd)
        except OSError as exc:
            self.counters.write_errors += 1
            self._stderr.write(f"kerno-otel: audit: fsync of {self.live} failed: {exc.strerror}\n")
            return
        took = time.perf_counter() - start
        self.counters.fsyncs += 1
        self.counters.fsync_seconds_total += took
        self.counters.fsync_seconds_max = max(self.counters.fsync_seconds_max, took)

    def switch(self, fd: int) -> None:
        """Sync and close the current file and go on in ``fd`` (opened by the sealer)."""
        self.sync()
        with contextlib.suppress(OSError):
            os.close(self._fd)
        self._fd, self._size = fd, os.fstat(fd).st_size

    def close(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self._fd)
        if self._sidecar_fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._sidecar_fd)
