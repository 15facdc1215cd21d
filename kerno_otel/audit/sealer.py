"""The seal half of the pipeline: seq → chain → write, and the writer's own records.

A :class:`Sealer` takes clean bodies (from :class:`kerno_otel.audit.record.Cleaner`)
and owns everything that needs one stream's order: ``seq`` and ``prev``, the
writer thread, rotation by size and time, signed checkpoints (every N records,
every T seconds even when idle, before each rotation and at shutdown) and the
``audit.*`` records that tell the log's own life — start, rotate, recover and
every loss. It runs in the emitting process (``audit.pipeline: thread``) or in
the audit worker (``process``); the two are transports around this one class.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, TextIO

import orjson

from kerno_otel.audit import files
from kerno_otel.audit.chain import Chain, Timestamps
from kerno_otel.audit.checkpoints import Signer
from kerno_otel.audit.counters import Counters
from kerno_otel.audit.file_life import CHECK_EVERY_RECORDS, FileLife
from kerno_otel.audit.keys import KeyFileError, load_private
from kerno_otel.audit.livefile import LiveFile
from kerno_otel.audit.losses import LostRanges
from kerno_otel.audit.record import WRITER_ACTOR, Clean, Cleaner
from kerno_otel.audit.stream import OpenStream, ResumePoint, open_stream
from kerno_otel.audit.writer import Writer
from kerno_otel.config import AuditConfig, ConfigError


class Sealer(FileLife):
    """Seals and writes one stream's records, in order. Thread-safe."""

    def __init__(
        self,
        config: AuditConfig,
        cleaner: Cleaner,
        *,
        version: str,
        stderr: TextIO,
        exit_process: Callable[[int], None] = os._exit,
    ) -> None:
        self.config = config
        self.counters = Counters()
        self._cleaner = cleaner
        self._version = version
        self._stderr = stderr
        self._exit = exit_process
        self._lock = threading.Lock()
        self._ts = Timestamps()
        self._chain = Chain()
        self._live = Path(config.file_path)
        self._max_bytes = int(config.max_size_mb * 1024 * 1024)
        self._rotate_every_ns = int(config.rotate_interval * 1e9) if config.rotate_interval else 0
        self._file_bytes = 0
        self._file_opened_ns = 0
        self._last_rotated = ""
        self._block = config.on_overflow == "block"
        self._dropped: dict[str, int] = {}  # records dropped in front of the writer, by type
        self._lost = LostRanges()  # seqs the writer dropped, until a loss record is in the file
        self._writer: Writer | None = None
        self._stream: OpenStream | None = None
        self._closed = False
        self._signer: Signer | None = None
        self._since_checkpoint = 0
        self._last_checkpoint = time.monotonic()
        self._timer: threading.Thread | None = None
        self._timer_stop = threading.Event()
        self._file: LiveFile | None = None
        self._until_check = CHECK_EVERY_RECORDS
        self._fault_pending: str | None = None
        self._fault_alarm = 0.0
        #: The stream id: ``line_hash`` of the stream's seq-0 line (see docs/audit-schema.md).
        self.stream_id: str | None = None

    # -- life ---------------------------------------------------------------------------

    def open(self, on_durable: Callable[[int], None] | None = None) -> None:
        """Open or resume the stream and write ``audit.recover`` (a torn tail) and ``audit.start``.

        ``on_durable`` is called from the writer thread with the number of lines
        (tickets) now durable, each time it grows. Raises
        :class:`kerno_otel.audit.files.AuditFileError` when the file cannot be used
        safely, and ``ConfigError`` naming ``audit.checkpoint.key_file`` when the
        signing key cannot be loaded.
        """
        now = time.time_ns()
        probe = {
            "v": "1",
            "seq": 0,
            "ts": self._ts.format(now),
            "type": "audit.start",
            "actor": WRITER_ACTOR,
            "details": self._start(None),
            "resource": self._cleaner.resource,
        }
        problem = self._cleaner.validator.check(probe)
        if problem is not None:  # the resource, checked here once per stream
            raise ValueError(f"cannot start the audit stream: {problem}")
        if self.config.checkpoint.key_file:
            try:
                self._signer = Signer(load_private(self.config.checkpoint.key_file))
            except KeyFileError as exc:
                raise ConfigError(f"audit.checkpoint.key_file: {exc}") from None
        group = self.config.file_group
        stream = open_stream(
            self._live,
            now,
            checkpoints=self._signer is not None,
            gid=None if group is None else files.group_id(group),
        )
        point = stream.point
        self._stream, self.stream_id, self._file = stream, stream.stream_id, stream.live
        if point.last_seq is not None and point.last_hash is not None:
            self._chain = Chain(point.last_seq + 1, point.last_hash)
        self._file_bytes, self._file_opened_ns = point.live_size, now
        self._writer = Writer(
            self._live,
            stream.fd,
            self.config,
            first_seq=self._chain.next_seq,
            stderr=self._stderr,
            counters=self.counters,
            exit_process=self._exit,
            sidecar_fd=stream.sidecar_fd,
            on_durable=on_durable,
        )
        self._writer.start()
        with self._lock:
            self._record_resume(point)
            self._own("audit.start", self._start(point))
            self._last_checkpoint = time.monotonic()
        self._timer = threading.Thread(target=self._tick, name="kerno-audit-timer", daemon=True)
        self._timer.start()

    def _start(self, point: ResumePoint | None) -> dict[str, Any]:
        """``audit.start``'s details (``point`` None: a probe, before the file is opened)."""
        details: dict[str, Any] = {
            "file": self._live.name,
            "resumed": point is not None and point.last_seq is not None,
            "last_seq": point.last_seq if point else None,
            "last_hash": point.last_hash if point else None,
            "fsync": self.config.fsync,
            "version": self._version,
        }
        if self.stream_id is not None:
            details["stream"] = self.stream_id
        return details

    def close(self) -> bool:
        """Record pending losses, seal with a last checkpoint, flush and close. Safe twice."""
        self._timer_stop.set()
        if self._timer is not None and self._timer is not threading.current_thread():
            self._timer.join()
        with self._lock:
            writer, stream = self._writer, self._stream
            if self._closed or writer is None or stream is None:
                self._closed = True
                return True
            self._record_losses()
            self._closed = True
        for _ in range(3):  # a loss record dropped on the way is written again, a few times
            writer.flush(10.0)
            with self._lock:
                if not self._record_losses():
                    break
        with self._lock:
            # One last look: a live file deleted since the last one (up to 512 records or
            # 0.5 s ago) is copied back now, while the writer still holds it.
            self._check_file(closing=True)
            self._checkpoint()  # the last line of the stream
        ok = writer.close()
        with self._lock:
            losses, done = writer.take_losses()
            for loss in losses:
                self._lost.add(loss.first_seq, loss.last_seq)
            self._lost.confirm(done)
            unrecorded = self._lost.pending_seqs()
        if unrecorded:
            self._stderr.write(
                f"kerno-otel: audit: {self._live}: {unrecorded} records were dropped at shutdown "
                "and no audit.loss naming them could be written (the disk is still failing)\n"
            )
        stream.close_lock()
        return ok

    # -- taking records -----------------------------------------------------------------

    def put(self, body: bytes) -> int | None:
        """Seal and queue one clean body; its writer ticket, or None when it was dropped."""
        with self._lock:
            return self._put(body)

    def put_many(self, bodies: Iterable[bytes]) -> int | None:
        """:meth:`put` for a run of bodies under one lock; the last ticket handed out."""
        ticket = None
        with self._lock:
            for body in bodies:
                ticket = self._put(body) or ticket
        return ticket

    def refused(self, type_name: str | None, problem: str) -> None:
        """A producer's record that may not be written: count it, say so, write its loss."""
        with self._lock:
            self.counters.validation_failures += 1
            self.counters.dropped("validation_failed")
            self._stderr.write(f"kerno-otel: audit: record rejected, not written: {problem}\n")
            if self._writer is None or self._closed:
                return
            # An invalid name is counted, never written (it could be carrying a value).
            types = {type_name: 1} if type_name is not None else {}
            self._loss("validation_failed", 1, types, rule=problem)

    def dropped(self, types: Mapping[str, int]) -> None:
        """Records dropped in front of this sealer (a full queue), by type."""
        with self._lock:
            for name, count in types.items():
                self._dropped[name] = self._dropped.get(name, 0) + count
            self.counters.dropped("queue_full", sum(types.values()))
            if self._writer is not None and not self._closed:
                self._record_losses()

    def lost(self, count: int) -> None:
        """``count`` records handed to an audit worker that died before it confirmed them
        durable (an upper bound: some may be in the file)."""
        with self._lock:
            self.counters.dropped("worker_lost", count)
            self._loss("worker_lost", count, {})

    def flush(self, timeout: float | None = 30.0) -> bool:
        """Return once every line queued so far is durable (per the fsync policy)."""
        with self._lock:
            writer = self._writer
            if writer is None:
                return True
            self._check_file()  # what is flushed goes to a file that is still the log
            self._record_losses()
        return writer.flush(timeout)

    def wait_durable(self, ticket: int, timeout: float | None = None) -> bool:
        writer = self._writer
        return writer is None or writer.wait_durable(ticket, timeout)

    @property
    def enqueued(self) -> int:
        """Tickets handed out so far: every line queued, the writer's own included."""
        return self._writer.enqueued if self._writer is not None else 0

    @property
    def unwritten(self) -> int:
        """Lines queued and not yet written (or dropped by ``on_write_error: drop``)."""
        writer = self._writer
        return writer.enqueued - writer.written if writer is not None else 0

    # -- under the lock ---------------------------------------------------------------------

    def _put(self, body: bytes) -> int | None:
        writer = self._writer
        if writer is None or self._closed:
            self.counters.dropped("closed")
            return None
        pending = 1 if (self._dropped or writer.has_losses) else 0
        if not writer.reserve(1 + pending, self._block):
            # The type is in the body; a drop is rare, so it is read only here.
            name = str(orjson.loads(b"{" + body + b"}").get("type"))
            self._dropped[name] = self._dropped.get(name, 0) + 1
            self.counters.dropped("queue_full")
            return None
        if pending:
            self._record_losses()
        self._until_check -= 1
        if self._until_check <= 0:
            self._check_file()
        return self._seal(body)

    def _seal(self, body: bytes, *, rotate: bool = True, sidecar: bytes | None = None) -> int:
        writer = self._writer
        assert writer is not None
        if (
            rotate
            and self._rotate_every_ns
            and self._file_bytes
            and time.time_ns() - self._file_opened_ns >= self._rotate_every_ns
        ):
            self._rotate("time")
        line = self._chain.seal_body(body)
        if self.stream_id is None and self._chain.next_seq == 1:
            self.stream_id = self._chain.prev
        ticket = writer.put(line, sidecar)
        self._file_bytes += len(line) + 1
        if rotate and self._file_bytes >= self._max_bytes:
            self._rotate("size")
        if self._signer is not None and sidecar is None and rotate:
            self._since_checkpoint += 1
            if self._since_checkpoint >= self.config.checkpoint.every_records:
                self._checkpoint()
        return ticket

    def _own(
        self,
        name: str,
        details: dict[str, Any],
        *,
        severity: str = "INFO",
        outcome: str = "success",
        rotate: bool = True,
    ) -> None:
        """One of the writer's own records: always room, never dropped in front of the writer."""
        checkpoint = name == "audit.checkpoint"
        result = self._cleaner.clean_own(name, details, severity, outcome, redact=not checkpoint)
        if not isinstance(result, Clean):  # a bug of ours: say so loudly, never loop
            self.counters.dropped("internal_error")
            self._stderr.write(f"kerno-otel: audit: internal record invalid: {result.problem}\n")
            return
        sidecar = orjson.dumps(details) if checkpoint else None
        self._seal(result.body, rotate=rotate and not checkpoint, sidecar=sidecar)

    def _loss(self, reason: str, count: int, types: Mapping[str, int], **extra: Any) -> None:
        # Only known names are written (another may carry a value); the count covers all.
        known = self._cleaner.validator.knows
        types = {name: n for name, n in types.items() if known(name)}
        details = {
            "count": count,
            "reason": reason,
            "after_seq": self._chain.last_seq,
            "types": types,
            **extra,
        }
        self._own("audit.loss", details, severity="ERROR", outcome="failure", rotate=False)

    def _record_losses(self) -> bool:
        """Write ``audit.loss`` records for queue drops and writer drops not yet recorded;
        whether it wrote any.

        A loss record the writer drops too (the disk still full) is a loss of its
        own: its seq joins the range it was about, and the whole range is recorded
        again, until one record naming it is in the file.
        """
        wrote = False
        if self._dropped:
            types, self._dropped = self._dropped, {}
            self._loss("queue_full", sum(types.values()), types)
            wrote = True
        if self._writer is None:
            return wrote
        losses, done = self._writer.take_losses()
        for loss in losses:
            self._lost.add(loss.first_seq, loss.last_seq)
        self._lost.confirm(done)
        for first, last in self._lost.unclaimed():
            details = {
                "count": last - first + 1,
                "reason": "write_error",
                "first_seq": first,
                "last_seq": last,
                "after_seq": first - 1 if first else None,
                "types": {},
            }
            self._lost.claim(first, last, self._chain.next_seq)
            # rotate=False: nothing may come between the claim and its line
            self._own("audit.loss", details, severity="ERROR", outcome="failure", rotate=False)
            wrote = True
        return wrote

    def _checkpoint(self) -> None:
        """Sign (stream, seq, hash, ts, key id) of the last line and write the checkpoint."""
        signer, last_seq = self._signer, self._chain.last_seq
        if signer is None or self.stream_id is None or last_seq is None or self._writer is None:
            return
        ts = self._ts.format(time.time_ns())
        self._own("audit.checkpoint", signer.sign(self.stream_id, last_seq, self._chain.prev, ts))
        self._since_checkpoint = 0
        self._last_checkpoint = time.monotonic()
