"""The parent side of ``audit.pipeline: process``: hand records to the audit worker.

:class:`WorkerProcessor` is the OTel ``LogRecordProcessor`` the ``AuditLog``
registers in that mode. ``on_emit`` encodes the record's fields as one JSON
array and appends it to a buffer; that is all an emitter pays for. One sender
thread takes the whole buffer and writes it to the worker's pipe, after a
short linger so that a busy stream costs one write per batch. The worker
(``kerno_otel.audit.worker.main``) does the rest. What this side guarantees:

- Back-pressure: at most ``queue_size`` lines are on their way to the worker
  and not yet taken in by it. Beyond that an emitter waits for the worker
  (``on_overflow: block``), or the record is counted and the worker writes an
  ``audit.loss`` for it (``drop``).
- ``flush()`` and ``fsync: always`` ask the worker and wait for its answer,
  which comes after everything sent before it.
- If the worker dies, every record not confirmed durable is counted in an
  ``audit.loss`` (reason ``worker_lost``), the stages go on in this process
  (resuming the same stream, repairing a torn tail), and the records still
  waiting here go there. ``on_write_error: exit`` in the worker stops this
  process with the same status.
"""

from __future__ import annotations

import contextlib
import fcntl
import itertools
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Any, TextIO

import orjson
from opentelemetry.sdk._logs import LogRecordProcessor, ReadWriteLogRecord

from kerno_otel.audit.chain import Timestamps
from kerno_otel.audit.files import AuditFileError
from kerno_otel.audit.processor import (
    ATTR_ACTOR,
    ATTR_DETAILS,
    ATTR_OUTCOME,
    clean_record,
    make_processor,
    new_record,
)
from kerno_otel.audit.worker.main import config_to_wire
from kerno_otel.audit.writer import Counters
from kerno_otel.config.load import AuditConfig, ConfigError
from kerno_otel.records.catalogue import EventType
from kerno_otel.records.redact import RedactionRule, Redactor
from kerno_otel.records.validate import RecordValidator

#: How long a partial batch may wait for company before the sender thread writes it.
_LINGER_S = 0.002
_PIPE_SIZE = 1 << 20
#: Bytes that may wait here besides the ``queue_size`` bound (records can be large).
_MAX_BUFFER = 64 << 20
_EXIT_ON_WRITE_ERROR = 74  # the worker's status for on_write_error: exit (EX_IOERR)

_ERRORS: dict[str, Callable[[str], Exception]] = {
    "AuditFileError": AuditFileError,
    "ConfigError": ConfigError,
    "ValueError": ValueError,
}
_PASSTHROUGH = (
    orjson.OPT_PASSTHROUGH_DATACLASS
    | orjson.OPT_PASSTHROUGH_DATETIME
    | orjson.OPT_PASSTHROUGH_SUBCLASS
)


_SECRET_WORDS = ("TOKEN", "SECRET", "KEY", "PASSWORD", "PASSWD", "CREDENTIAL", "AUTH")


def _worker_environment() -> dict[str, str]:
    """This process's environment without what the worker has no use for and should not
    hold: our own and OpenTelemetry's settings (the worker gets its configuration over
    the pipe) and anything named like a secret."""
    return {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("KERNO_", "OTEL_"))
        and not any(word in name.upper() for word in _SECRET_WORDS)
    }


class WorkerError(RuntimeError):
    """The audit worker could not be started."""


class WorkerProcessor(LogRecordProcessor):
    """Sends OTel log records to an audit worker process. Thread-safe."""

    def __init__(
        self,
        config: AuditConfig,
        *,
        event_types: tuple[EventType, ...],
        redaction_rules: tuple[RedactionRule, ...],
        validator: RecordValidator,
        redactor: Redactor,
        resource: Mapping[str, str],
        version: str,
        stderr: TextIO,
        exit_process: Callable[[int], None] = os._exit,
    ) -> None:
        self.config = config
        self._event_types = event_types
        self._rules = redaction_rules
        self._validator = validator
        self._redactor = redactor
        self._resource = dict(resource)
        self._version = version
        self._stderr = stderr
        self._exit = exit_process
        #: This side's numbers (blocked emitters, records refused after shutdown).
        self.counters = Counters()
        self.on_checkpoint: list[Callable[[dict[str, Any]], None]] = []
        self._capacity = config.queue_size
        self._block = config.on_overflow == "block"
        self._always = config.fsync == "always"
        self._lock = threading.Lock()
        self._buf = bytearray()
        self._lines_out = 0  # lines ever put in _buf (records and requests)
        self._lines_read = 0  # of those, how many the worker has taken in (its "read" acks)
        self._room = threading.Condition()
        self._records = 0  # records ever appended to _buf
        self._durable = 0  # records the worker says are on disk
        self._dropped: dict[str, int] = {}
        self._ids = itertools.count(1)
        self._answers: dict[int, dict[str, Any]] = {}
        self._answered = threading.Condition()
        self._final_stats: dict[str, Any] | None = None
        self._closing = False
        self._closed = False
        self._local: Any = None  # the in-process fallback after a worker loss
        #: Wakes the sender thread (shares _lock); only that thread writes to the pipe.
        self._wake = threading.Condition(self._lock)
        self._urgent = False  # a request waits in _buf: no lingering
        self._sender_stop = False
        self._sender: threading.Thread | None = None
        self._ts = Timestamps()
        self._proc: subprocess.Popen[bytes] | None = None
        self._procs: list[subprocess.Popen[bytes]] = []
        self._fd = -1
        self._acks_fd = -1

    # -- life ---------------------------------------------------------------------

    def open(self) -> None:
        """Start the worker and wait until it has opened (or failed to open) the log.

        Raises what the worker raised opening the log (AuditFileError,
        ConfigError, ValueError) with its message, or :class:`WorkerError`.
        """
        # parent -> cleaning stage -> sealing stage -> files; the sealing stage answers.
        to_clean_r, to_clean_w = os.pipe()
        to_seal_r, to_seal_w = os.pipe()
        acks_r, acks_w = os.pipe()
        root = str(Path(__file__).resolve().parents[3])

        def command(role: str) -> list[str]:
            return [
                sys.executable,
                "-c",
                f"import sys; sys.path.insert(0, {root!r}); "
                f"from kerno_otel.audit.worker.main import main; sys.exit(main({role!r}))",
            ]

        for fd in (to_clean_w, to_seal_w):
            with contextlib.suppress(OSError):
                fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, _PIPE_SIZE)
        env = _worker_environment()
        try:
            sealer = subprocess.Popen(command("seal"), stdin=to_seal_r, stdout=acks_w, env=env)
            try:
                cleaner = subprocess.Popen(
                    command("clean"), stdin=to_clean_r, stdout=to_seal_w, env=env
                )
            except OSError:
                os.close(to_seal_w)
                sealer.wait()
                raise
        except OSError as exc:
            for fd in (to_clean_r, to_clean_w, to_seal_r, to_seal_w, acks_r, acks_w):
                with contextlib.suppress(OSError):
                    os.close(fd)
            raise WorkerError(
                f"cannot start the audit worker ({exc}); set audit.pipeline: thread"
            ) from None
        for fd in (to_clean_r, to_seal_r, to_seal_w, acks_w):
            os.close(fd)
        #: The cleaning stage first: stopping it stops the intake (tests use that).
        self._procs = [cleaner, sealer]
        self._proc = cleaner
        self._fd, self._acks_fd = to_clean_w, acks_r
        init = {
            "op": "init",
            "config": config_to_wire(self.config),
            "types": [asdict(t) for t in self._event_types],
            "rules": [asdict(r) for r in self._rules],
            "resource": self._resource,
            "version": self._version,
        }
        self._write_all(orjson.dumps(init) + b"\n")
        reader = _LineReader(self._acks_fd)
        answer: dict[str, Any] = {}
        while (first := reader.line()) is not None:
            answer = orjson.loads(first)
            if "stderr" not in answer:
                break
            self._stderr.write(answer["stderr"])  # what opening said (a repaired tail)
        if first is None or "ready" not in answer:
            os.close(self._fd)  # the cleaning stage ends, and with it the sealing stage
            statuses = [proc.wait() for proc in self._procs]
            os.close(self._acks_fd)
            if first is not None and "error" in answer:
                error = answer["error"]
                raise _ERRORS.get(error["kind"], WorkerError)(error["message"])
            raise WorkerError(
                f"the audit worker exited at start (status {statuses}); "
                "see its message above, or set audit.pipeline: thread"
            )
        self._sender = threading.Thread(
            target=self._send_loop, name="kerno-audit-send", daemon=True
        )
        self._sender.start()
        threading.Thread(
            target=self._receive, args=(reader,), name="kerno-audit-acks", daemon=True
        ).start()

    # -- the OTel side --------------------------------------------------------------

    def on_emit(self, log_record: ReadWriteLogRecord) -> None:
        """Called by the SDK for every record; never raises into the emitter."""
        lr = log_record.log_record
        attrs = lr.attributes if lr.attributes is not None else {}
        details = attrs.get(ATTR_DETAILS)
        if type(details) is not dict and isinstance(details, Mapping):
            details = dict(details)
        # A tuple, not the record: the cheapest thing to encode here (the worker builds
        # the record; an emitter's p99 is what this side is for).
        fields = (
            lr.timestamp or time.time_ns(),
            lr.event_name,
            attrs.get(ATTR_ACTOR),
            lr.severity_text or "INFO",
            attrs.get(ATTR_OUTCOME, "unknown"),
            details,
            lr.trace_id or 0,
            lr.span_id or 0,
        )
        try:
            line = orjson.dumps(fields, option=_PASSTHROUGH)
        except (TypeError, orjson.JSONEncodeError):
            line = orjson.dumps(
                {"op": "reject", "type": str(lr.event_name), "problem": self._problem(fields)}
            )
        with self._lock:
            if self._closing:
                self.counters.dropped("closed")
                self._stderr.write(
                    f"kerno-otel: audit: a {lr.event_name!r} record was emitted after shutdown\n"
                )
                return
            if self._local is not None:
                self._to_local(line)
                return
            if self._full() and not self._make_room_locked(line, lr.event_name):
                return
            buf = self._buf
            if not buf:
                self._wake.notify()
            buf += line
            buf += b"\n"
            self._lines_out += 1
            if line[:1] == b"[":
                self._records += 1
        if self._always:
            self._ask("flush", timeout_ms=2**31)

    def _problem(self, fields: tuple[Any, ...]) -> str:
        """Why a record cannot be encoded, in the in-process pipeline's words (never its values)."""
        ts_ns, type_name, actor, severity, outcome, details, trace_id, span_id = fields
        record = new_record(
            self._ts.format(ts_ns),
            type_name,
            actor,
            severity,
            outcome,
            details,
            self._resource,
            trace_id,
            span_id,
        )
        problem = clean_record(record, self._redactor, self._validator)
        return problem or f"{type_name}: /details: cannot be encoded as JSON"

    def _make_room_locked(self, line: bytes, type_name: Any) -> bool:
        """At capacity: wait for the worker (block) or count the record (drop).

        Waits with the lock released, so that a worker loss can be handled meanwhile.
        """
        if not self._block:
            name = str(type_name)
            self._dropped[name] = self._dropped.get(name, 0) + 1
            self.counters.dropped("queue_full")
            return False
        self.counters.blocked_emits += 1
        while self._full() and self._local is None and not self._closing:
            seen = self._lines_read
            self._lock.release()
            try:
                with self._room:
                    if self._lines_read == seen:
                        self._room.wait(0.05)
            finally:
                self._lock.acquire()
        if self._local is not None:
            self._to_local(line)
            return False
        if self._closing:
            self.counters.dropped("closed")
            self._stderr.write(
                f"kerno-otel: audit: a {type_name!r} record was emitted after shutdown\n"
            )
            return False
        return True

    def _full(self) -> bool:
        """Whether ``queue_size`` lines are on their way to the worker and not yet taken in."""
        return self._lines_out - self._lines_read >= self._capacity or len(self._buf) >= _MAX_BUFFER

    def _to_local(self, line: bytes) -> None:
        """One waiting line to the in-process fallback."""
        local = self._local
        if line[:1] == b"[":
            local.accept(local.build_record(*orjson.loads(line)))
            return
        message = orjson.loads(line)
        if message.get("op") == "reject":
            local.reject(message["type"], message["problem"])
        elif message.get("op") == "dropped":
            local.note_dropped(message["types"])

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        """Return once everything emitted before the call is durable (per the fsync policy)."""
        if self._local is not None:
            return bool(self._local.force_flush(timeout_millis))
        answer = self._ask("flush", timeout_ms=timeout_millis)
        return bool(answer is not None and answer.get("ok"))

    def stats(self) -> dict[str, Any]:
        """The worker's counters with this side's added; the last known after close."""
        if self._final_stats is not None:
            worker = dict(self._final_stats)
        elif self._local is not None:
            worker = asdict(self._local.counters)
        else:
            answer = self._ask("stats", timeout_ms=10_000)
            worker = dict(answer["stats"]) if answer is not None else asdict(Counters())
        worker["blocked_emits"] += self.counters.blocked_emits
        dropped = dict(worker["records_dropped"])
        for reason, count in self.counters.records_dropped.items():
            if reason != "queue_full":  # the worker counted those when told of them
                dropped[reason] = dropped.get(reason, 0) + count
        worker["records_dropped"] = dropped
        return worker

    def shutdown(self) -> None:
        """Send what is left, let the worker finish the log, wait for it. Safe twice."""
        with self._lock:
            if self._closing:
                return
            self._closing = True
            if self._local is None:
                self._queue_dropped_locked()
                self._append_locked({"op": "close"}, urgent=True)
        if self._local is not None:
            self._local.shutdown()
        else:
            with self._answered:
                self._answered.wait_for(lambda: self._closed, timeout=120)
        self._stop_sender()
        self._close_input()  # end of input: the cleaning stage ends, then the sealing one
        for proc in self._procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self._stderr.write("kerno-otel: audit: the audit worker did not stop; killed\n")
                proc.kill()
                proc.wait()

    # -- talking to the worker ------------------------------------------------------

    def _ask(self, op: str, **extra: Any) -> dict[str, Any] | None:
        """Send a request after everything queued so far; its answer, or None on timeout."""
        ident = next(self._ids)
        with self._lock:
            if self._local is not None or self._closing:
                return None
            self._queue_dropped_locked()
            self._append_locked({"op": op, "id": ident, **extra}, urgent=True)
        timeout = extra.get("timeout_ms", 30_000) / 1000.0
        with self._answered:
            self._answered.wait_for(
                lambda: ident in self._answers or self._local is not None or self._closed,
                timeout=min(timeout, 2**31),
            )
            answer = self._answers.pop(ident, None)
        if answer is None and self._local is not None and op == "flush":
            ok = self._local.force_flush(int(min(timeout, 2**31) * 1000))
            return {"ok": ok}
        return answer

    def _append_locked(self, message: dict[str, Any], urgent: bool = False) -> None:
        if not self._buf or urgent:
            self._wake.notify()
        self._buf += orjson.dumps(message) + b"\n"
        self._lines_out += 1
        self._urgent = self._urgent or urgent

    def _queue_dropped_locked(self) -> None:
        if self._dropped:
            types, self._dropped = self._dropped, {}
            self._append_locked({"op": "dropped", "types": types})

    def _write_all(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            view = view[os.write(self._fd, view) :]

    def _send_loop(self) -> None:
        """The one writer of the pipe: takes the whole buffer, writes it without the lock.

        Emitters only append to the buffer, so a slow or full pipe never stalls
        them (until ``queue_size``); a record waits at most ``_LINGER_S`` for
        company before it is sent, a request not at all.
        """
        while True:
            with self._lock:
                while not self._buf and not self._sender_stop:
                    self._wake.wait()
                if self._sender_stop:
                    return
                urgent = self._urgent
            if not urgent:
                time.sleep(_LINGER_S)
            with self._lock:
                if self._sender_stop:
                    return
                data, self._buf, self._urgent = self._buf, bytearray(), False
                if self._dropped and not self._full():
                    self._queue_dropped_locked()
            view = memoryview(data)
            try:
                while view:
                    view = view[os.write(self._fd, view) :]
            except OSError:
                # The worker is gone: what it did not get goes back in front, for the
                # in-process pipeline (see _worker_lost).
                with self._lock:
                    self._buf[:0] = view
                return

    def _close_input(self) -> None:
        with self._lock:
            fd, self._fd = self._fd, -1
        if fd >= 0:
            with contextlib.suppress(OSError):
                os.close(fd)

    def _stop_sender(self) -> None:
        with self._lock:
            self._sender_stop = True
            self._wake.notify()
        if self._sender is not None and self._sender is not threading.current_thread():
            self._sender.join(30)

    def _receive(self, reader: _LineReader) -> None:
        """Take the worker's messages until it closes its end."""
        while (line := reader.line()) is not None:
            message = orjson.loads(line)
            if "stderr" in message:
                self._stderr.write(message["stderr"])
                continue
            if "read" in message:
                with self._room:
                    self._lines_read = message["read"]
                    self._room.notify_all()
                continue
            if "durable" in message and message["durable"] is not None:
                self._durable = max(self._durable, message["durable"])
            if "checkpoint" in message:
                for callback in self.on_checkpoint:
                    try:
                        callback(message["checkpoint"])
                    except Exception as exc:
                        self._stderr.write(
                            "kerno-otel: audit: an on_checkpoint callback failed: "
                            f"{type(exc).__name__}\n"
                        )
            elif "closed" in message:
                # The log is finished; the stages end once this side closes its pipe.
                with self._answered:
                    self._final_stats = message["stats"]
                    self._closed = True
                    self._answered.notify_all()
            elif "flushed" in message or "stats" in message:
                ident = message.get("id", message.get("flushed"))
                with self._answered:
                    self._answers[ident] = message
                    self._answered.notify_all()
        with contextlib.suppress(OSError):
            os.close(self._acks_fd)
        if self._final_stats is None:
            self._worker_lost()
        with self._answered:
            self._closed = True
            self._answered.notify_all()

    def _worker_lost(self) -> None:
        """The worker died: count what it had not made durable, go on in this process."""
        self._stop_sender()  # it gives back what the worker did not get
        self._close_input()  # a cleaning stage still running ends
        statuses = []
        for proc in self._procs:
            try:
                statuses.append(proc.wait(timeout=30))
            except subprocess.TimeoutExpired:
                proc.kill()
                statuses.append(proc.wait())
        status = next((code for code in statuses if code), 0)
        if _EXIT_ON_WRITE_ERROR in statuses and self.config.on_write_error == "exit":
            self._stderr.write(
                "kerno-otel: audit: the audit worker stopped on a write error "
                "(on_write_error: exit); stopping\n"
            )
            self._exit(_EXIT_ON_WRITE_ERROR)
            return
        how = f"signal {-status}" if status < 0 else f"status {status}"
        with self._lock:
            self._stderr.write(
                f"kerno-otel: audit: the audit worker stopped unexpectedly ({how}); "
                "the audit pipeline continues in this process\n"
            )
            local, _ = make_processor(
                self.config,
                event_types=self._event_types,
                redaction_rules=self._rules,
                resource=self._resource,
                version=self._version,
                stderr=self._stderr,
            )
            local.on_checkpoint.extend(self.on_checkpoint)
            try:
                local.open()
            except Exception as exc:
                self._stderr.write(
                    f"kerno-otel: audit: cannot continue the audit log in this process: {exc}; "
                    "records emitted from now on are refused\n"
                )
                self._closing = True
                return
            waiting = bytes(self._buf).split(b"\n")
            # A line the pipe took only in part never reached the worker: it is resent.
            unsent = sum(1 for line in waiting if line[:1] == b"[")
            lost = self._records - unsent - self._durable
            if lost > 0:
                local.note_lost(lost)
            self._local = local
            for line in waiting:
                if line:
                    self._to_local(line)
            if self._dropped:
                local.note_dropped(self._dropped)
                self._dropped = {}
            self._buf.clear()
        with self._answered:
            self._answered.notify_all()


class _LineReader:
    """Whole lines from a blocking file descriptor."""

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._lines: list[bytes] = []
        self._rest = b""

    def line(self) -> bytes | None:
        while not self._lines:
            try:
                data = os.read(self._fd, 1 << 16)
            except OSError:
                data = b""
            if not data:
                return None
            parts = (self._rest + data).split(b"\n")
            self._rest = parts.pop()
            self._lines = parts[::-1]
        return self._lines.pop()
