"""The parent's side of ``audit.pipeline: process``: clean records to the audit worker, in order.

:class:`WorkerTransport` appends each clean body to a buffer as one frame;
that is all an emitter pays for after cleaning. One sender thread writes the
buffer to the worker's pipe after a short linger, so a busy stream costs one
write per batch. What this side guarantees:

- Back-pressure: at most ``queue_size`` frames are on their way to the worker
  and not yet taken in by it. Beyond that an emitter waits (``on_overflow:
  block``), or the record is counted and the worker writes an ``audit.loss``
  for it (``drop``).
- ``flush()`` and ``fsync: always`` ask the worker and wait for its answer,
  which comes after everything sent before it.
- If the worker dies, every record not confirmed durable is counted in an
  ``audit.loss`` (reason ``worker_lost``), a :class:`~kerno_otel.audit.sealer.Sealer`
  goes on in this process (resuming the same stream, repairing a torn tail),
  and the frames still waiting here are replayed into it. ``on_write_error:
  exit`` in the worker stops this process with the same status. That take-over
  is :mod:`~kerno_otel.audit.worker.fallback`.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import subprocess
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any, TextIO

import orjson

from kerno_otel.audit.counters import Counters, merged
from kerno_otel.audit.processor import LocalTransport
from kerno_otel.audit.record import Clean, Cleaner, Fields, Refused
from kerno_otel.audit.worker import fallback
from kerno_otel.audit.worker import protocol as wire
from kerno_otel.audit.worker.main import deliver
from kerno_otel.audit.worker.spawn import reap, start_worker
from kerno_otel.config import AuditConfig
from kerno_otel.records.catalogue import EventType
from kerno_otel.records.redact import RedactionRule

#: How long a partial batch may wait for company before the sender thread writes it.
_LINGER_S = 0.002
#: Bytes that may wait here besides the ``queue_size`` bound (records can be large).
_MAX_BUFFER = 64 << 20
_PASSTHROUGH = (
    orjson.OPT_PASSTHROUGH_DATACLASS
    | orjson.OPT_PASSTHROUGH_DATETIME
    | orjson.OPT_PASSTHROUGH_SUBCLASS
)


class WorkerTransport:
    """Sends clean records to an audit worker process. Thread-safe."""

    def __init__(
        self,
        config: AuditConfig,
        cleaner: Cleaner,
        event_types: Iterable[EventType],
        rules: Iterable[RedactionRule],
        *,
        version: str,
        stderr: TextIO,
        exit_process: Callable[[int], None] = os._exit,
    ) -> None:
        self.config = config
        self._cleaner = cleaner  # the parent's: RAW frames replayed after a loss go through it
        self._init = wire.Init(config, tuple(event_types), tuple(rules), cleaner.resource, version)
        self._stderr = stderr
        self._exit = exit_process
        self.counters = Counters()  # this side's numbers: blocked emitters
        self._capacity = config.queue_size
        self._block = config.on_overflow == "block"
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)  # wakes the sender thread
        self._room = threading.Condition()  # wakes emitters waiting for room
        self._answered = threading.Condition()
        self._buf = bytearray()
        self._sent = 0  # frames ever put in _buf
        self._taken = 0  # of those, how many the worker has taken in
        self._records = 0  # the parent's records (RECORD and REFUSE frames) ever put
        self._durable = 0  # records the worker says are on disk
        self._dropped: dict[str, int] = {}
        self._ids = itertools.count(1)
        self._answers: dict[int, Any] = {}
        self._final: dict[str, Any] | None = None
        self._urgent = False
        self._stop = False
        self._closing = False
        self._ended = False  # the worker's answers ended (closed, or lost)
        self.local: LocalTransport | None = None  # the in-process fallback after a loss
        #: Set once a lost worker's records go on in this process (``local``).
        self.recovered = threading.Event()
        self._frames = 0  # frames in _buf
        self._piped = 0  # frames ever written to the pipe whole
        self._procs: list[subprocess.Popen[bytes]] = []  # the clean stage, then the seal stage
        self._sender: threading.Thread | None = None
        self._fd = -1

    # -- life ---------------------------------------------------------------------------

    def open(self) -> None:
        """Start the worker and wait until it has opened (or failed to open) the log."""
        self._procs, self._fd, reader = start_worker(self._init, self._stderr)
        self._sender = threading.Thread(
            target=self._send_loop, name="kerno-audit-send", daemon=True
        )
        self._sender.start()
        threading.Thread(
            target=self._receive, args=(reader,), name="kerno-audit-answers", daemon=True
        ).start()

    def close(self) -> None:
        """Send what is left, let the worker finish the log, wait for it."""
        with self._lock:
            if self._closing:
                return
            self._closing = True
            if self.local is None:
                self._put_dropped()
                self._append(wire.frame(wire.CLOSE), urgent=True)
        with self._answered:
            self._answered.wait_for(lambda: self._ended, timeout=120)
        if self.local is not None:
            self.local.close()
        self._stop_sender()
        self._close_input()  # end of input: the clean stage ends, then the seal stage
        reap(self._procs, self._stderr)

    # -- records ------------------------------------------------------------------------

    def send(self, clean: Clean, *, durable: bool) -> None:
        self._put(clean.body, clean.type, wire.RECORD)
        if durable:
            self.flush(None)

    def send_raw(self, fields: Fields, *, durable: bool) -> bool:
        """Hand a record over as emitted, for the worker's clean stage; False (nothing sent)
        when its fields are not JSON, for the caller to clean (and refuse) it here."""
        row: tuple[Any, ...] = tuple(fields)
        trace_id = fields.trace_id
        if type(trace_id) is int and trace_id >= 1 << 64:
            # A span's 128-bit trace id is past what JSON integers carry here: sent as
            # hex, flagged by a ninth element no producer can add (issue 15: records
            # emitted inside a span kept to this path instead of being cleaned here).
            row = (*row[:6], f"{trace_id:x}", row[7], 1)
        try:
            payload = orjson.dumps(row, option=_PASSTHROUGH)
        except (TypeError, orjson.JSONEncodeError):
            return False
        self._put(payload, fields.type if type(fields.type) is str else "", wire.RAW)
        if durable:
            self.flush(None)
        return True

    def refuse(self, refused: Refused) -> None:
        self._put(orjson.dumps(refused._asdict()), refused.type or "", wire.REFUSE)

    def _put(self, payload: bytes, type_name: str, kind: bytes) -> None:
        """One of the parent's records, as a frame of ``kind``, in order (the hot path)."""
        with self._lock:
            if self._full() and self.local is None and not self._make_room(type_name):
                return
            if self.local is None and (self._closing or self._ended):
                self.counters.dropped("closed")  # emitted while close() runs: counted
                return
            if self.local is not None:
                self._lock.release()  # the fallback has its own lock; keep ours short
                try:
                    deliver(self.local.sealer, kind, payload, self._cleaner)
                finally:
                    self._lock.acquire()
                return
            buf = self._buf
            if not buf:
                self._wake.notify()
            buf += kind
            buf += payload
            buf += b"\n"
            self._sent += 1
            self._frames += 1
            self._records += 1

    def _make_room(self, type_name: str) -> bool:
        """At capacity (lock held): wait for the worker (``block``) or count the record
        (``drop``); True when the record may go on (to the worker, or to the fallback)."""
        if not self._block:
            name = type_name  # the sealer names only known types; the count covers all
            self._dropped[name] = self._dropped.get(name, 0) + 1
            return False
        self.counters.blocked_emits += 1
        while self._full() and self.local is None and not self._ended:
            seen = self._taken
            self._lock.release()  # the worker's answers (and a loss) are handled meanwhile
            try:
                with self._room:
                    if self._taken == seen and not self._ended:
                        self._room.wait(0.5)
            finally:
                self._lock.acquire()
        return True

    def _full(self) -> bool:
        """Whether ``queue_size`` frames are on their way to the worker and not yet taken in."""
        return self._sent - self._taken >= self._capacity or len(self._buf) >= _MAX_BUFFER

    def _append(self, frame: bytes, urgent: bool = False) -> None:
        if not self._buf or urgent:
            self._wake.notify_all()
        self._buf += frame
        self._sent += 1
        self._frames += 1
        self._urgent = self._urgent or urgent

    def drain(self, timeout: float | None = None) -> bool:
        """Wait until every frame handed over so far is in the worker's pipe (not yet
        necessarily read by it); False on timeout or when the worker is lost."""
        with self._lock:
            sent = self._sent
            return (
                self._wake.wait_for(
                    lambda: self._piped >= sent or self.local is not None or self._stop, timeout
                )
                and self._piped >= sent
            )

    def _put_dropped(self) -> None:
        if self._dropped:
            types, self._dropped = self._dropped, {}
            self._append(wire.message(wire.DROP, {"types": types}))
            self._records += sum(types.values())  # the worker counts them in DURABLE too

    # -- requests -----------------------------------------------------------------------

    def flush(self, timeout: float | None) -> bool:
        answer = self._ask(wire.FLUSH, timeout)
        if answer is None and self.local is not None:
            return self.local.flush(timeout)
        return bool(answer is not None and answer.get("ok"))

    def stats(self) -> dict[str, Any]:
        """The worker's counters with this side's added; the last known after close."""
        if self._final is not None:
            worker = self._final
        elif self.local is not None:
            worker = self.local.stats()
        else:
            answer = self._ask(wire.STATS, 10.0)
            worker = answer["stats"] if answer is not None else {}
        own = self.counters.as_dict()
        waiting = sum(self._dropped.values())  # dropped here, not yet told to the worker
        own["records_dropped"] = {"queue_full": waiting} if waiting else {}
        return merged(worker, own)

    def _ask(self, kind: bytes, timeout: float | None) -> Any:
        """Send a request after everything queued so far; its answer, or None."""
        ident = next(self._ids)
        timeout_ms = 2**31 if timeout is None or not timeout < 2**31 / 1000 else int(timeout * 1000)
        with self._lock:
            if self.local is not None or self._closing:
                return None
            self._put_dropped()
            self._append(wire.message(kind, {"id": ident, "timeout_ms": timeout_ms}), urgent=True)
        with self._answered:
            self._answered.wait_for(
                lambda: ident in self._answers or self._ended, timeout=min(timeout_ms / 1000, 2**31)
            )
            return self._answers.pop(ident, None)

    # -- the pipe -----------------------------------------------------------------------

    def _send_loop(self) -> None:
        """The one writer of the pipe: takes the whole buffer, writes it without the lock."""
        while True:
            with self._lock:
                self._wake.wait_for(lambda: self._buf or self._stop)
                if self._stop:
                    return
                urgent = self._urgent
            if not urgent:
                time.sleep(_LINGER_S)  # let a partial batch gather company (a linger, not a sync)
            with self._lock:
                if self._stop:
                    return
                if self._dropped and not self._full():
                    self._put_dropped()
                data, self._buf, self._urgent = self._buf, bytearray(), False
                frames, self._frames = self._frames, 0
            if len(data) >= _MAX_BUFFER:  # emitters may be waiting on the buffer's size
                with self._room:
                    self._room.notify_all()
            # Not files.write_all: on a failure, what the worker did not get must be known.
            view = memoryview(data)
            try:
                while view:
                    view = view[os.write(self._fd, view) :]
            except OSError:
                # The worker is gone: what it did not get whole goes back in front, for the
                # in-process sealer (see _worker_lost); a frame it got only in part, whole.
                start = data.rfind(b"\n", 0, len(data) - len(view)) + 1
                with self._lock:
                    self._buf[:0] = data[start:]
                return
            with self._lock:
                self._piped += frames
                self._wake.notify_all()

    def _receive(self, reader: wire.FrameReader) -> None:
        """Take the worker's answers until it closes its end."""
        for kind, payload in reader.frames():
            if kind == wire.TAKEN:
                with self._room:
                    self._taken = wire.value(payload)
                    self._room.notify_all()
            elif kind == wire.DURABLE:
                self._durable = max(self._durable, wire.value(payload))
            elif kind == wire.STDERR:
                self._stderr.write(wire.value(payload))
            elif kind in (wire.FLUSHED, wire.STATS):
                answer = wire.value(payload)
                with self._answered:
                    self._answers[answer["id"]] = answer
                    self._answered.notify_all()
            elif kind == wire.CLOSED:
                self._final = wire.value(payload)["stats"]
        with contextlib.suppress(OSError):
            os.close(reader.fd)
        if self._final is None:
            self._worker_lost()
        with self._answered, self._room:
            self._ended = True
            self._answered.notify_all()
            self._room.notify_all()

    def _close_input(self) -> None:
        with self._lock:
            fd, self._fd = self._fd, -1
        if fd >= 0:
            with contextlib.suppress(OSError):
                os.close(fd)

    def _stop_sender(self) -> None:
        with self._lock:
            self._stop = True
            self._wake.notify_all()
        if self._sender is not None and self._sender is not threading.current_thread():
            self._sender.join(30)

    def _worker_lost(self) -> None:
        """The worker died: count what it had not made durable, go on in this process."""
        self._stop_sender()  # it gives back what the worker did not get
        self._close_input()  # a clean stage still running ends
        if not fallback.may_go_on(reap(self._procs), self._init, self._stderr, self._exit):
            return
        local = fallback.local_transport(self._init, self._stderr, self._exit)
        with self._lock:
            try:
                local.open()
            except Exception as exc:
                self._stderr.write(
                    f"kerno-otel: audit: cannot continue the audit log in this process: {exc}; "
                    "records emitted from now on are refused\n"
                )
                self._closing = True
                return
            # Frames the pipe did not take whole never reached the worker: they are replayed.
            fallback.replay(
                local.sealer,
                bytes(self._buf),
                records=self._records,
                durable=self._durable,
                dropped=self._dropped,
                cleaner=self._cleaner,
            )
            self._dropped = {}
            self._buf.clear()
            self.local = local
            self._wake.notify_all()
        self.recovered.set()
