"""The sealer's part in the live file's life: rotation, and what others do to the file.

Rotation renames the live file and opens the next one here, under the sealer's lock
(:class:`kerno_otel.audit.livefile.LiveFile`, relative to the directory's fd), then
queues the switch for the writer and seals the ``audit.rotate`` that opens the new
file, so the record only ever states a rotation that happened. The same path answers
a live file someone else renamed, deleted or replaced: noticed by two ``stat`` calls
every ``CHECK_EVERY_RECORDS`` records, every ``CHECK_EVERY_S`` seconds (idle too) and
before every flush; said on stderr and in ``stats()["file_faults"]``; recorded as
``audit.rotate`` with reason ``renamed`` or ``removed`` at the head of a new live file.
A removed file is copied back first from the descriptor the writer still holds, under a
rotated name (``restored: true``), so deleting the live file loses no record.
"""

from __future__ import annotations

import errno
import os
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from kerno_otel.audit import files
from kerno_otel.audit.chain import Chain
from kerno_otel.audit.checkpoints import Signer
from kerno_otel.audit.counters import Counters
from kerno_otel.audit.livefile import HARD_LINK, REMOVED, LiveFile
from kerno_otel.audit.stream import ResumePoint
from kerno_otel.audit.writer import Writer
from kerno_otel.config import AuditConfig

#: The live file is looked at (two ``stat`` calls) every this many records, every this
#: many seconds, and before every flush.
CHECK_EVERY_RECORDS = 512
CHECK_EVERY_S = 0.5
#: How long a removed live file's queued records may take to reach it before it is copied
#: back (producers wait meanwhile; the file is copied back only once they are all in it).
RESTORE_DRAIN_S = 5.0
#: Names the copy of a removed live file tries when the one it chose was taken meanwhile.
RESTORE_NAME_TRIES = 16


class FileLife:
    """Mixed into :class:`kerno_otel.audit.sealer.Sealer`; every method runs under its lock."""

    config: AuditConfig
    counters: Counters
    stream_id: str | None
    _lock: threading.Lock
    _live: Path
    _file: LiveFile | None
    _writer: Writer | None
    _chain: Chain
    _stderr: TextIO
    _closed: bool
    _signer: Signer | None
    _file_bytes: int
    _file_opened_ns: int
    _last_rotated: str
    _last_checkpoint: float
    _until_check: int
    _fault_pending: str | None  # a fault noticed and not yet answered (no new file yet)
    _fault_alarm: float
    _timer_stop: threading.Event

    if TYPE_CHECKING:

        def _own(
            self,
            name: str,
            details: dict[str, Any],
            *,
            severity: str = "INFO",
            outcome: str = "success",
            rotate: bool = True,
        ) -> None: ...

        def _checkpoint(self) -> None: ...

    def _record_resume(self, point: ResumePoint) -> None:
        """At start, what happened to the files while no writer held them, recorded before
        ``audit.start``: the live file renamed (``audit.rotate`` ``renamed``: the stream goes
        on from the renamed file) or removed (``audit.rotate`` ``removed``, naming the live
        file itself: its records are gone, and verify says a file is missing), and a torn
        tail cut off (``audit.recover``)."""
        faults = self.counters.file_faults
        if point.renamed_from is not None:  # the new live file names where the stream is
            self._stderr.write(
                f"kerno-otel: audit: {self._live} was renamed to "
                f"{point.renamed_from.name} while the writer was down; continuing its stream\n"
            )
            faults["renamed"] = faults.get("renamed", 0) + 1
            self._own("audit.rotate", self._rotate_details(point.renamed_from.name, "renamed"))
        elif point.live_missing:
            self._stderr.write(
                f"kerno-otel: audit: {self._live} is missing while its rotated files are here: "
                "it was removed while the writer was down, and the records after seq "
                f"{point.last_seq} in it are gone (recorded as audit.rotate)\n"
            )
            faults[REMOVED] = faults.get(REMOVED, 0) + 1
            details = self._rotate_details(self._live.name, REMOVED)
            self._own("audit.rotate", details, severity="WARN")
        if point.torn is not None:
            torn = point.torn
            self._stderr.write(
                f"kerno-otel: audit: {self._live}: set aside a torn last line "
                f"({torn.bytes} bytes) in {torn.set_aside.name}\n"
            )
            recover = {
                "file": self._live.name,
                "bytes": torn.bytes,
                "digest": torn.digest,
                "set_aside": torn.set_aside.name,
            }
            self._own("audit.recover", recover, severity="WARN")

    def _rotate(self, reason: str) -> None:
        writer, live = self._writer, self._file
        assert writer is not None and live is not None
        now = time.time_ns()
        self._file_bytes, self._file_opened_ns = 0, now  # a refused rotation is tried again later
        name, _ = self._rotated_name(now)
        try:
            fd = live.rotate(name)
        except OSError as exc:  # nothing rotated: records go on in the current file
            self.counters.write_errors += 1
            self._stderr.write(
                f"kerno-otel: audit: cannot rotate {self._live}: {exc.strerror or exc}; "
                "writing on in the current file\n"
            )
            self._check_file()
            return
        self._last_rotated = name
        self._checkpoint()  # seal the old file: its last line is then a checkpoint
        writer.switch(fd, name)
        self._own("audit.rotate", self._rotate_details(name, reason), rotate=False)

    def _rotated_name(self, now: int) -> tuple[str, int]:
        """A free rotated name after the last one this writer took (that one may not be on
        disk yet), and the time it was made from."""
        name = files.rotated_name(self._live, now)
        while name <= self._last_rotated:
            now += 1000
            name = files.rotated_name(self._live, now)
        return name, now

    def _rotate_details(self, old_file: str, reason: str, **extra: Any) -> dict[str, Any]:
        last_seq = self._chain.last_seq
        details: dict[str, Any] = {
            "old_file": old_file,
            "new_file": self._live.name,
            "last_seq": last_seq if last_seq is not None else 0,
            "last_hash": self._chain.prev,
            "reason": reason,
            **extra,
        }
        if self.stream_id is not None:
            details["stream"] = self.stream_id
        return details

    def _check_file(self, *, closing: bool = False) -> None:
        """Notice what was done to the live file from outside and answer it (under the lock):
        a new live file opening with ``audit.rotate`` (reason ``renamed`` or ``removed``).
        ``closing``: the last look, from close() (producers already shut out)."""
        self._until_check = CHECK_EVERY_RECORDS
        live, writer = self._file, self._writer
        if live is None or writer is None or (self._closed and not closing):
            return
        fault = live.check()
        if fault is None:
            return
        if fault != self._fault_pending:  # counted once, not at every retry
            faults = self.counters.file_faults
            faults[fault] = faults.get(fault, 0) + 1
        if fault == HARD_LINK:
            self._stderr.write(
                f"kerno-otel: audit: {self._live} has a hard link (another name): a writer "
                "started on that name would be refused; remove the other link\n"
            )
            return
        reader = self._reader_of_removed(live, writer) if fault == REMOVED else None
        try:
            new = live.replace(time.time_ns())
        except OSError as exc:
            if reader is not None:
                os.close(reader)
            self.counters.write_errors += 1
            now = time.monotonic()
            if fault != self._fault_pending or now - self._fault_alarm >= 10:
                self._stderr.write(
                    f"kerno-otel: audit: {self._live} was {fault} and no new live file can be "
                    f"opened: {exc.strerror or exc}; records go on into the old one, trying again\n"
                )
                self._fault_alarm = now
            self._fault_pending = fault
            return
        self._fault_pending = None
        old_name, rotated = new.old_name, None
        if reader is not None:
            rotated = self._restore(live, reader)
            old_name = rotated or old_name
        where = f" to {new.old_name}" if new.reason == "renamed" else ""
        aside = (
            f"; {new.displaced} at its path was set aside as {new.set_aside}"
            if new.set_aside
            else ""
        )
        kept = f"; its records were copied back from the open file to {rotated}" if rotated else ""
        self._stderr.write(
            f"kerno-otel: audit: {self._live} was {new.reason}{where} by someone else"
            f"{aside}{kept}; writing on in a new live file (recorded as audit.rotate)\n"
        )
        if new.reason == "renamed":
            self._checkpoint()  # the renamed file still holds the log: seal it
        writer.switch(new.fd, rotated)  # a restored file is compressed and retired as rotated
        self._file_bytes, self._file_opened_ns = 0, time.time_ns()
        extra: dict[str, Any] = {"set_aside": new.set_aside} if new.set_aside else {}
        if rotated:
            extra["restored"] = True
        details = self._rotate_details(old_name, new.reason, **extra)
        self._own("audit.rotate", details, severity="WARN", rotate=False)

    def _reader_of_removed(self, live: LiveFile, writer: Writer) -> int | None:
        """Before a removed live file is let go: everything queued for it written (the
        writer drains it while the lock keeps new records out), then a read-only descriptor
        of it. None when either cannot be had: its records are then gone with it, and
        ``audit.rotate`` says ``removed`` with the live file's own name."""
        if not writer.flush(RESTORE_DRAIN_S):
            return None
        try:
            return live.reader()
        except OSError:
            return None

    def _restore(self, live: LiveFile, reader: int) -> str | None:
        """Copy the removed file back under a rotated name; that name, or None (said on
        stderr) when it cannot be done. Closes ``reader``."""
        now, name = time.time_ns(), ""
        try:
            for _ in range(RESTORE_NAME_TRIES):
                name, now = self._rotated_name(now)
                try:
                    live.restore(reader, name)
                    break
                except FileExistsError:  # taken since the look: never over it, the next one
                    now += 1000
            else:
                raise FileExistsError(errno.EEXIST, "every name tried was taken")
        except OSError as exc:
            self._stderr.write(
                f"kerno-otel: audit: cannot copy the removed {self._live.name} back as {name}: "
                f"{exc.strerror or exc}; its records are gone\n"
            )
            return None
        finally:
            os.close(reader)
        self._last_rotated = name
        return name

    def _tick(self) -> None:
        """Look at the live file every ``CHECK_EVERY_S`` (an idle log is looked at too) and
        seal every ``checkpoint.every_seconds``, whether or not anything was written meanwhile
        (an unsealed quiet interval is what let truncation pass in CVE-2023-31438)."""
        every = self.config.checkpoint.every_seconds
        wait = CHECK_EVERY_S
        while not self._timer_stop.wait(wait):
            with self._lock:
                if self._closed:
                    return
                self._check_file()
                wait = CHECK_EVERY_S
                if self._signer is not None:
                    if time.monotonic() >= self._last_checkpoint + every:
                        self._checkpoint()
                    due = self._last_checkpoint + every - time.monotonic()
                    wait = max(0.001, min(wait, due))
