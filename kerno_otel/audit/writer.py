"""The writer thread: a bounded queue of encoded lines, group-committed to disk.

The emitting side (the sealer, under its lock) puts whole lines and file switches
(a rotation or a replaced live file: the sealer renames and opens, see ``file_life``)
in order; this thread writes them with as few syscalls as it can and fsyncs by policy:

- ``batch``: group commit; a written line waits at most ``fsync_interval_ms``
  for its fsync, and :meth:`Writer.flush` forces one at once;
- ``always``: an fsync after every write, and emitters wait for it;
- ``never``: the OS decides; ``flush`` only waits for the write.

Nothing is dropped here unless ``on_write_error: drop`` says so, and then the
seq range lost is kept for the sealer to record as ``audit.loss``. The file side
(whole appends cut back on error, fsyncs, the checkpoints file) is ``appender``.
"""

from __future__ import annotations

import collections
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from kerno_otel.audit.appender import Appender
from kerno_otel.audit.counters import Counters
from kerno_otel.audit.rotation import Rotator
from kerno_otel.config import AuditConfig

#: The writer wakes for this many queued lines, or after ``_GATHER_S`` of the first.
_WAKE_BATCH = 2048
_GATHER_S = 0.010


@dataclass(frozen=True)
class _Switch:
    """Go on in the live file open as ``fd`` (the sealer opened it). ``rotated``: the name
    the previous file was rotated to (to compress), None when someone else moved it."""

    fd: int
    rotated: str | None


@dataclass(frozen=True)
class _Checkpoint:
    """An ``audit.checkpoint`` line; ``sidecar`` goes to the checkpoints file once it is durable."""

    line: bytes
    sidecar: bytes


@dataclass(frozen=True)
class WriteLoss:
    """Lines the writer had to drop (``on_write_error: drop``): how many, which seqs, why."""

    count: int
    first_seq: int
    last_seq: int
    error: str


class Writer:
    """Owns the live file descriptor and the thread that writes to it."""

    def __init__(
        self,
        live: Path,
        fd: int,
        config: AuditConfig,
        *,
        first_seq: int,
        stderr: TextIO,
        counters: Counters | None = None,
        exit_process: Callable[[int], None] = os._exit,
        sidecar_fd: int | None = None,
        on_durable: Callable[[int], None] | None = None,
    ) -> None:
        self.live = live
        self.config = config
        self._fsync = config.fsync
        self._interval = config.fsync_interval_ms / 1000.0
        self._echo = stderr if config.stderr else None
        self._stderr = stderr
        self.counters = counters if counters is not None else Counters()
        #: Called from the writer thread with the ticket count now durable, each time it grows.
        self._on_durable = on_durable
        self._cond = threading.Condition(threading.Lock())
        # A deque: producers append and the writer pops without taking _cond
        # (both are atomic under the GIL); _cond is only for sleeping and waking.
        self._items: collections.deque[bytes | _Switch | _Checkpoint] = collections.deque()
        self._enqueued = 0  # lines ever put
        self._written = 0  # lines ever written (or dropped by policy)
        self._durable = 0  # lines ever made durable (per the fsync policy)
        self._first_seq = first_seq  # seq of the first line this writer is given
        self._flush_wanted = False
        self._idle = False
        self._first_put = 0.0
        self._stopping = False
        self._losses: list[WriteLoss] = []
        self._file = Appender(
            live,
            fd,
            config,
            stderr=stderr,
            counters=self.counters,
            exit_process=exit_process,
            sidecar_fd=sidecar_fd,
            stopping=lambda: self._stopping,
            on_drop=self._dropped,
        )
        self._rotator = Rotator(live, config, self._stderr, self.counters)
        self._thread = threading.Thread(target=self._run, name="kerno-audit-writer", daemon=True)

    # -- emitting side (called under the processor's lock) -------------------------

    def start(self) -> None:
        self._rotator.start()
        self._thread.start()

    def reserve(self, n: int, block: bool) -> bool:
        """Wait for room for ``n`` lines; False (at once) when full and ``block`` is False."""
        if len(self._items) + n <= self.config.queue_size:
            return True
        if not block:
            return False
        with self._cond:
            self.counters.blocked_emits += 1
            while len(self._items) + n > self.config.queue_size and not self._stopping:
                self._flush_wanted = True  # a full queue is worth writing now
                self._cond.notify_all()
                self._cond.wait(0.5)
            return True

    def put(self, line: bytes, sidecar: bytes | None = None) -> int:
        """Queue one line (no newline); its ticket for :meth:`wait_durable`. One producer
        at a time (the sealer holds its lock).

        With ``sidecar`` (one JSON line) the line is an ``audit.checkpoint``: the sidecar
        is appended to the checkpoints file, fsynced, once the log line is durable, so the
        checkpoints file never vouches for more than the log holds.
        """
        self._push(line if sidecar is None else _Checkpoint(line, sidecar))
        self._enqueued += 1
        return self._enqueued

    def switch(self, fd: int, rotated: str | None) -> None:
        """Queue a change of file: lines queued before go to the old file, lines after to
        ``fd``. The writer syncs and closes the old file then, and compresses it (or applies
        retention) when ``rotated`` names it."""
        self._push(_Switch(fd, rotated))

    def _push(self, item: bytes | _Switch | _Checkpoint) -> None:
        items = self._items
        items.append(item)
        queued = len(items)
        if queued == 1:
            self._first_put = time.monotonic()
        if self._idle and (queued == 1 or queued == _WAKE_BATCH or type(item) is not bytes):
            with self._cond:
                self._cond.notify_all()

    def take_losses(self) -> tuple[list[WriteLoss], int]:
        """Write losses not yet taken, and the seq of the last line the writer is done with
        (written or dropped) before them: a line at or below it that is not in a loss
        taken so far is in the file. The caller records the losses as ``audit.loss``."""
        with self._cond:
            done = self._first_seq + self._written - 1
            losses, self._losses = self._losses, []
            return losses, done

    @property
    def has_losses(self) -> bool:
        return bool(self._losses)

    # -- waiting ------------------------------------------------------------------

    def wait_durable(self, ticket: int, timeout: float | None = None) -> bool:
        """Block until line ``ticket`` is durable per the fsync policy."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while self._durable < ticket:
                if self._file.failed is not None and not self._thread.is_alive():
                    return False
                self._flush_wanted = True
                self._cond.notify_all()
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                self._cond.wait(0.25 if remaining is None else min(remaining, 0.25))
            return True

    def flush(self, timeout: float | None = None) -> bool:
        """Block until every line queued so far is durable; False on timeout."""
        with self._cond:
            ticket = self._enqueued
        return self.wait_durable(ticket, timeout)

    def close(self, timeout: float | None = 30.0) -> bool:
        """Write and sync everything queued, stop the thread, close the file. Safe twice."""
        ok = self.flush(timeout)
        with self._cond:
            if self._stopping:
                return ok
            self._stopping = True
            self._cond.notify_all()
        self._thread.join(timeout)
        self._rotator.close()
        with self._cond:
            unwritten = self._enqueued - self._written
        if unwritten:
            self._stderr.write(
                f"kerno-otel: audit: {unwritten} records could not be written to {self.live} "
                "before shutdown\n"
            )
            ok = False
        self._file.close()
        return ok

    @property
    def written(self) -> int:
        """Lines written so far (or dropped by ``on_write_error: drop``)."""
        return self._written

    @property
    def enqueued(self) -> int:
        """Lines ever put (the last ticket handed out)."""
        return self._enqueued

    # -- the thread ----------------------------------------------------------------

    def _run(self) -> None:
        pending_since: float | None = None  # when the oldest unsynced write happened
        while True:
            with self._cond:
                self._wait_for_work(pending_since)
                items = self._items
                batch = [items.popleft() for _ in range(len(items))]
                self.counters.queue_depth = len(batch)
                flush_wanted, self._flush_wanted = self._flush_wanted, False
                stopping = self._stopping
                if batch:
                    self._cond.notify_all()  # room for blocked emitters
            wrote = self._write_batch(batch)
            if wrote and pending_since is None:
                pending_since = time.monotonic()
            with self._cond:
                written = self._written
            if self._fsync == "never":
                self._mark_durable(written)
                pending_since = None
            elif pending_since is not None and (
                self._fsync == "always"
                or flush_wanted
                or stopping
                or time.monotonic() - pending_since >= self._interval
            ):
                self._file.sync()
                self._mark_durable(written)
                pending_since = None
            elif pending_since is None:
                self._mark_durable(written)  # file switches only, or dropped lines
            if stopping and not batch:
                with self._cond:
                    if not self._items:
                        return

    def _wait_for_work(self, pending_since: float | None) -> None:
        """Sleep (holding ``_cond``) until there is a batch worth writing or an fsync due.

        Lines are gathered for up to ``_GATHER_S`` (or ``_WAKE_BATCH`` lines) so
        a busy stream costs one wake-up per batch, not one per line: every wake-up
        is a GIL hand-off that the emitting threads pay for.
        """
        while not self._stopping:
            # Set before looking at the queue: a producer that appends after the
            # look sees it and wakes us (see put).
            self._idle = True
            now = time.monotonic()
            timeout: float | None = None
            queued = len(self._items)
            if queued:
                if queued >= _WAKE_BATCH or self._flush_wanted or self._fsync == "always":
                    break
                due = self._first_put + _GATHER_S
                if now >= due:
                    break
                timeout = due - now
            if pending_since is not None:
                if self._flush_wanted:
                    break
                due = pending_since + self._interval
                if now >= due:
                    break
                timeout = due - now if timeout is None else min(timeout, due - now)
            self._cond.wait(timeout)
        self._idle = False

    def _mark_durable(self, written: int) -> None:
        with self._cond:
            if written <= self._durable:
                return
            self._durable = written
            self._cond.notify_all()
        if self._on_durable is not None:
            self._on_durable(written)

    def _write_batch(self, batch: list[bytes | _Switch | _Checkpoint]) -> bool:
        """Write runs of lines between file switches; True when bytes reached the file."""
        wrote = False
        run: list[bytes] = []
        for item in batch:
            if type(item) is bytes:
                run.append(item)
                continue
            if isinstance(item, _Checkpoint):
                run.append(item.line)
                landed = self._write_lines(run)
                wrote |= landed
                run = []
                if landed:
                    self._file.append_checkpoint(item.sidecar)
                continue
            if run:
                wrote |= self._write_lines(run)
                run = []
            assert isinstance(item, _Switch)
            self._file.switch(item.fd)
            self._rotator.switched(item.rotated)
        if run:
            wrote |= self._write_lines(run)
        return wrote

    def _write_lines(self, lines: list[bytes]) -> bool:
        data = b"\n".join(lines) + b"\n"
        ok = self._file.append(data, len(lines))
        with self._cond:
            self._written += len(lines)
        if ok:
            self.counters.records_written += len(lines)
            if self._echo is not None:
                try:
                    self._echo.write(data.decode("utf-8"))
                    self._echo.flush()
                except (OSError, ValueError):
                    pass
        return ok

    def _dropped(self, count: int, reason: str) -> None:
        """The appender dropped the next ``count`` lines (``on_write_error: drop``)."""
        with self._cond:
            first = self._first_seq + self._written
            self._losses.append(WriteLoss(count, first, first + count - 1, reason))
