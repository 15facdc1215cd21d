"""The audit processor: an OTel ``LogRecordProcessor`` that redacts, validates, chains and writes.

The stages, in the one place they are wired (:meth:`AuditProcessor._submit`):

    record -> redact -> validate -> reserve room -> seq + prev -> encode -> writer

A record that fails validation is never written as it is: it is counted,
reported on stderr and replaced by an ``audit.loss`` record naming its type and
the failing rule (never its values). A full queue blocks the emitter
(``on_overflow: block``) or, with ``drop``, the record is counted and an
``audit.loss`` with the count follows as soon as there is room.

With ``audit.checkpoint.key_file`` set, the processor also writes signed
``audit.checkpoint`` records (issue 5): every ``every_records`` records, every
``every_seconds`` even when nothing else was written (an unsealed quiet interval
is what let truncation pass unnoticed in systemd's CVE-2023-31438), before each
rotation and at shutdown.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, TextIO

import orjson
from opentelemetry.sdk._logs import LogRecordProcessor, ReadWriteLogRecord

from kerno_otel.audit import files as _files
from kerno_otel.audit.chain import GENESIS, Chain, Timestamps
from kerno_otel.audit.checkpoints import Signer, read_sidecar, sidecar_path
from kerno_otel.audit.keys import KeyFileError, load_private
from kerno_otel.audit.writer import Counters, Writer
from kerno_otel.config.load import AuditConfig, ConfigError
from kerno_otel.records.catalogue import BUILTIN_TYPES, EventType
from kerno_otel.records.redact import RedactionRule, Redactor
from kerno_otel.records.schema import SchemaSet
from kerno_otel.records.validate import RecordValidator

#: Attribute names of the OTLP mapping (DESIGN.md): every field but type,
#: severity, ts and the ids lives under ``kerno.audit.*``.
ATTR_ACTOR = "kerno.audit.actor"
ATTR_OUTCOME = "kerno.audit.outcome"
ATTR_DETAILS = "kerno.audit.details"
ATTR_SEQ = "kerno.audit.seq"
ATTR_PREV = "kerno.audit.prev"
ATTR_V = "kerno.audit.v"

_WRITER_ACTOR = "audit/writer"


class AuditProcessor(LogRecordProcessor):
    """Turns OTel log records into durable, chained audit lines. Thread-safe."""

    def __init__(
        self,
        config: AuditConfig,
        *,
        redactor: Redactor,
        validator: RecordValidator,
        resource: Mapping[str, str],
        version: str,
        stderr: TextIO | None = None,
    ) -> None:
        self.config = config
        self._redactor = redactor
        self._validator = validator
        self._resource = dict(resource)
        self._version = version
        self._stderr = stderr if stderr is not None else sys.stderr
        self.counters = Counters()
        self._lock = threading.Lock()
        self._ts = Timestamps()
        self._chain = Chain()
        self._live = Path(config.file_path)
        self._max_bytes = int(config.max_size_mb * 1024 * 1024)
        self._rotate_every_ns = (
            int(config.rotate_interval * 1e9) if config.rotate_interval else None
        )
        self._file_bytes = 0
        self._file_opened_ns = 0
        self._last_rotated = ""
        self._block = config.on_overflow == "block"
        self._always = config.fsync == "always"
        self._dropped: dict[str, int] = {}
        self._writer: Writer | None = None
        self._closed = False
        self._signer: Signer | None = None
        #: The stream id: ``line_hash`` of the stream's seq-0 line (see docs/audit-schema.md).
        self.stream_id: str | None = None
        self._since_checkpoint = 0
        self._last_checkpoint = time.monotonic()
        self._timer: threading.Thread | None = None
        self._timer_stop = threading.Event()
        self._lock_fd = -1
        #: Called with each checkpoint's ``details`` (a dict) right after it is queued,
        #: under the processor's lock: the hook for shipping checkpoints off-host (the
        #: OTLP forwarder). A callback must be quick, must not emit audit events, and
        #: an exception it raises is reported on stderr and otherwise ignored.
        self.on_checkpoint: list[Callable[[dict[str, Any]], None]] = []

    # -- life ---------------------------------------------------------------------

    def open(self) -> None:
        """Open or resume the stream: repair a torn tail, start the writer, write ``audit.start``.

        Raises :class:`kerno_otel.audit.files.AuditFileError` when the file cannot be
        used safely (a symlink, a directory, a last line that is not a record), and
        :class:`kerno_otel.config.load.ConfigError` naming ``audit.checkpoint.key_file``
        when the signing key cannot be loaded.
        """
        now = time.time_ns()
        probe = {
            "v": "1",
            "seq": 0,
            "ts": self._ts.format(now),
            "type": "audit.start",
            "actor": _WRITER_ACTOR,
            "details": {
                "file": self._live.name,
                "resumed": False,
                "last_seq": None,
                "last_hash": None,
                "fsync": self.config.fsync,
                "version": self._version,
            },
            "resource": self._resource,
        }
        problem = self._validator.check(probe)
        if problem is not None:
            # check_built trusts the resource (and our own fields) checked here, once per stream.
            raise ValueError(f"cannot start the audit stream: {problem}")
        checkpoint = self.config.checkpoint
        if checkpoint.key_file:
            try:
                self._signer = Signer(load_private(checkpoint.key_file))
            except KeyFileError as exc:
                raise ConfigError(f"audit.checkpoint.key_file: {exc}") from None
        _files.ensure_directory(self._live.parent)
        self._lock_fd = _files.lock_stream(self._live)
        try:
            point = _files.repair_and_resume(self._live, now)
            sidecar_fd = None
            if self._signer is not None:
                sidecar_fd = _files.open_append(sidecar_path(self._live))
            fd = _files.open_append(self._live)
        except BaseException:
            os.close(self._lock_fd)
            raise
        if point.last_seq is not None and point.last_hash is not None:
            self._chain = Chain(point.last_seq + 1, point.last_hash)
            # A stream written before stream ids existed, whose seq-0 file is gone, is
            # named after the line where its checkpoints begin (then carried onwards).
            self.stream_id = (
                _files.find_stream_id(self._live) or self._sidecar_stream() or point.last_hash
            )
        self._file_bytes = point.live_size
        self._file_opened_ns = now
        self._writer = Writer(
            self._live,
            fd,
            first_seq=self._chain.next_seq,
            fsync=self.config.fsync,
            fsync_interval_ms=self.config.fsync_interval_ms,
            queue_size=self.config.queue_size,
            on_write_error=self.config.on_write_error,
            compress=self.config.compress,
            max_backups=self.config.max_backups,
            max_age_days=self.config.max_age_days,
            echo=self._stderr if self.config.stderr else None,
            stderr=self._stderr,
            counters=self.counters,
            sidecar_fd=sidecar_fd,
        )
        self._writer.start()
        with self._lock:
            if point.torn is not None:
                self._stderr.write(
                    f"kerno-otel: audit: {self._live}: set aside a torn last line "
                    f"({point.torn.bytes} bytes) in {point.torn.set_aside.name}\n"
                )
                self._submit_internal(
                    "audit.recover",
                    {
                        "file": self._live.name,
                        "bytes": point.torn.bytes,
                        "digest": point.torn.digest,
                        "set_aside": point.torn.set_aside.name,
                    },
                    severity="WARN",
                )
            start: dict[str, Any] = {
                "file": self._live.name,
                "resumed": point.last_seq is not None,
                "last_seq": point.last_seq,
                "last_hash": point.last_hash,
                "fsync": self.config.fsync,
                "version": self._version,
            }
            if self.stream_id is not None:
                start["stream"] = self.stream_id
            self._submit_internal("audit.start", start)
            self._last_checkpoint = time.monotonic()
        if self._signer is not None:
            self._timer = threading.Thread(
                target=self._checkpoint_timer, name="kerno-audit-checkpoint", daemon=True
            )
            self._timer.start()

    def _sidecar_stream(self) -> str | None:
        """The stream id of the last checkpoint in the checkpoints file, if any."""
        path = sidecar_path(self._live)
        found = None
        try:
            for _, item in read_sidecar(path):
                if item is not None and isinstance(item.get("stream"), str):
                    found = item["stream"]
        except OSError:
            return None
        return found

    def _checkpoint_timer(self) -> None:
        """Seal every ``every_seconds``, whether or not anything was written meanwhile."""
        every = self.config.checkpoint.every_seconds
        wait = every
        while not self._timer_stop.wait(wait):
            with self._lock:
                if self._closed:
                    return
                due = self._last_checkpoint + every
                if time.monotonic() >= due:
                    self._checkpoint_locked()
                    due = self._last_checkpoint + every
                wait = max(0.001, due - time.monotonic())

    # -- the OTel side --------------------------------------------------------------

    def on_emit(self, log_record: ReadWriteLogRecord) -> None:
        """Called by the SDK for every record; never raises into the emitter."""
        lr = log_record.log_record
        attrs = lr.attributes if lr.attributes is not None else {}
        record = self.build_record(
            lr.timestamp or time.time_ns(),
            lr.event_name,
            attrs.get(ATTR_ACTOR),
            lr.severity_text or "INFO",
            attrs.get(ATTR_OUTCOME, "unknown"),
            attrs.get(ATTR_DETAILS),
            lr.trace_id,
            lr.span_id,
        )
        self.accept(record)
        if isinstance(attrs, dict) and record["details"] is not attrs.get(ATTR_DETAILS):
            # Other processors on this provider see what the file holds, never the raw values.
            attrs[ATTR_DETAILS] = record["details"]

    def build_record(
        self,
        ts_ns: int,
        type_name: Any,
        actor: Any,
        severity: str,
        outcome: Any,
        details: Any,
        trace_id: int | None,
        span_id: int | None,
    ) -> dict[str, Any]:
        """The record as the pipeline takes it: keys in line order, ``seq``/``prev`` to fill."""
        return new_record(
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

    def accept(self, record: dict[str, Any]) -> int | None:
        """Run one built record through the pipeline; never raises. Its writer ticket or None.

        With ``fsync: always`` it returns once the record is on disk.
        """
        try:
            ticket = self._submit(record)
        except Exception as exc:
            self._internal_error(record, exc)
            return None
        if ticket is not None and self._always and self._writer is not None:
            self._writer.wait_durable(ticket)
        return ticket

    def reject(self, type_name: str, problem: str) -> None:
        """Record a record refused before it reached this processor (see ``_worker``)."""
        with self._lock:
            if self._closed or self._writer is None:
                self.counters.dropped("closed")
                return
            self._reject(type_name, problem)

    def note_dropped(self, types: Mapping[str, int]) -> None:
        """Record drops made before this processor (a full queue in front of it)."""
        with self._lock:
            total = 0
            for name, count in types.items():
                self._dropped[name] = self._dropped.get(name, 0) + count
                total += count
            self.counters.dropped("queue_full", total)
            if self._writer is not None and not self._closed:
                self._record_losses()

    def note_lost(self, count: int) -> None:
        """Record ``count`` records handed to an audit worker that died before they were
        confirmed durable (some may have reached the file)."""
        with self._lock:
            self.counters.dropped("worker_lost", count)
            self._submit_internal(
                "audit.loss",
                {
                    "count": count,
                    "reason": "worker_lost",
                    "after_seq": self._chain.last_seq,
                    "types": {},
                },
                severity="ERROR",
                outcome="failure",
            )

    @property
    def resource(self) -> dict[str, str]:
        return self._resource

    @property
    def enqueued(self) -> int:
        """Tickets handed out so far: every line this processor queued, its own included."""
        return self._writer.enqueued if self._writer is not None else 0

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        """Return once everything emitted before the call is durable (per the fsync policy)."""
        writer = self._writer
        if writer is None:
            return True
        with self._lock:
            self._record_losses()
        return writer.flush(timeout_millis / 1000.0)

    def shutdown(self) -> None:
        """Flush, stop the writer thread and close the file. Safe twice."""
        self._timer_stop.set()
        if self._timer is not None and self._timer is not threading.current_thread():
            self._timer.join()
        with self._lock:
            if self._closed or self._writer is None:
                self._closed = True
                return
            self._record_losses()
            self._checkpoint_locked()
            self._closed = True
            writer = self._writer
        writer.close()
        os.close(self._lock_fd)  # the next writer may start

    # -- the pipeline -------------------------------------------------------------

    def accept_many(self, records: list[dict[str, Any]], trusted: bool = False) -> int | None:
        """:meth:`accept` for a run of records under one lock; the last ticket or None.

        Never waits for durability (``fsync: always``): the caller asks for a flush.
        ``trusted``: the records were already redacted and validated, by this
        pipeline's own cleaning stage (``kerno_otel.audit.worker.main.clean``).
        """
        ticket = None
        with self._lock:
            for record in records:
                try:
                    ticket = self._submit_locked(record, trusted) or ticket
                except Exception as exc:
                    self._internal_error(record, exc)
        return ticket

    def _internal_error(self, record: dict[str, Any], exc: Exception) -> None:
        self.counters.dropped("internal_error")
        self._stderr.write(
            f"kerno-otel: audit: internal error on a {record['type']!r} record: "
            f"{type(exc).__name__}\n"
        )

    def _submit(self, record: dict[str, Any]) -> int | None:
        """Redact, validate, sequence, chain, encode and queue one record; its ticket or None."""
        with self._lock:
            return self._submit_locked(record)

    def _submit_locked(self, record: dict[str, Any], trusted: bool = False) -> int | None:
        type_name = record["type"]
        problem = None if trusted else clean_record(record, self._redactor, self._validator)
        if self._closed or self._writer is None:
            self.counters.dropped("closed")
            self._stderr.write(
                f"kerno-otel: audit: a {type_name!r} record was emitted after shutdown\n"
            )
            return None
        if problem is not None:
            self._reject(str(type_name), problem)
            return None
        return self._seal_locked(record)

    def _seal_locked(self, record: dict[str, Any]) -> int | None:
        writer = self._writer
        assert writer is not None
        pending = 1 if (self._dropped or writer.has_losses) else 0
        if not writer.reserve(1 + pending, self._block):
            self._dropped[record["type"]] = self._dropped.get(record["type"], 0) + 1
            self.counters.dropped("queue_full")
            return None
        if pending:
            self._record_losses()
        if (
            self._rotate_every_ns is not None
            and self._file_bytes
            and time.time_ns() - self._file_opened_ns >= self._rotate_every_ns
        ):
            self._rotate_locked("time")
        line = self._chain.seal(record)
        ticket = writer.put(line)
        self._file_bytes += len(line) + 1
        if self._file_bytes >= self._max_bytes:
            self._rotate_locked("size")
        if self._signer is not None:
            self._count_for_checkpoint()
        return ticket

    def _count_for_checkpoint(self) -> None:
        self._since_checkpoint += 1
        if self._since_checkpoint >= self.config.checkpoint.every_records:
            self._checkpoint_locked()

    def _checkpoint_locked(self) -> None:
        """Sign (stream, seq, hash, ts, key id) of the last line written and append the
        checkpoint to the log and to the checkpoints file. Under the lock."""
        signer = self._signer
        last_seq = self._chain.last_seq
        if signer is None or self.stream_id is None or last_seq is None or self._writer is None:
            return
        details = signer.sign(
            self.stream_id, last_seq, self._chain.prev, self._ts.format(time.time_ns())
        )
        self._submit_internal("audit.checkpoint", details, rotate=False, checkpoint=True)
        self._since_checkpoint = 0
        self._last_checkpoint = time.monotonic()
        for callback in self.on_checkpoint:
            try:
                callback(dict(details))
            except Exception as exc:
                self._stderr.write(
                    f"kerno-otel: audit: an on_checkpoint callback failed: {type(exc).__name__}\n"
                )

    def _rotate_locked(self, reason: str) -> None:
        writer = self._writer
        assert writer is not None
        now = time.time_ns()
        name = _files.rotated_name(self._live, now)
        while name <= self._last_rotated:  # the previous rotation may not be on disk yet
            now += 1000
            name = _files.rotated_name(self._live, now)
        self._last_rotated = name
        # Seal the old file before it is renamed: its last line is then a checkpoint.
        self._checkpoint_locked()
        last_seq, last_hash = self._chain.last_seq, self._chain.prev
        writer.rotate(name)
        self._file_bytes = 0
        self._file_opened_ns = now
        details: dict[str, Any] = {
            "old_file": name,
            "new_file": self._live.name,
            "last_seq": last_seq if last_seq is not None else 0,
            "last_hash": last_hash,
            "reason": reason,
        }
        if self.stream_id is not None:
            details["stream"] = self.stream_id
        self._submit_internal("audit.rotate", details, rotate=False)

    def _reject(self, type_name: str, problem: str) -> None:
        self.counters.validation_failures += 1
        self.counters.dropped("validation_failed")
        self._stderr.write(f"kerno-otel: audit: record rejected, not written: {problem}\n")
        self._submit_internal(
            "audit.loss",
            {
                "count": 1,
                "reason": "validation_failed",
                "after_seq": self._chain.last_seq,
                "types": {type_name: 1} if _type_name_ok(type_name) else {"invalid": 1},
                "rule": problem,
            },
            severity="ERROR",
            outcome="failure",
        )

    def _record_losses(self) -> None:
        """Write ``audit.loss`` records for queue drops and writer drops not yet recorded."""
        if self._dropped:
            types, self._dropped = self._dropped, {}
            self._submit_internal(
                "audit.loss",
                {
                    "count": sum(types.values()),
                    "reason": "queue_full",
                    "after_seq": self._chain.last_seq,
                    "types": types,
                },
                severity="ERROR",
                outcome="failure",
            )
        if self._writer is not None:
            for loss in self._writer.take_losses():
                self._submit_internal(
                    "audit.loss",
                    {
                        "count": loss.count,
                        "reason": "write_error",
                        "first_seq": loss.first_seq,
                        "last_seq": loss.last_seq,
                        "after_seq": loss.first_seq - 1 if loss.first_seq else None,
                        "types": {},
                    },
                    severity="ERROR",
                    outcome="failure",
                )

    def _submit_internal(
        self,
        type_name: str,
        details: dict[str, Any],
        *,
        severity: str = "INFO",
        outcome: str = "success",
        rotate: bool = True,
        checkpoint: bool = False,
    ) -> None:
        """The writer's own records: same stages, already under the lock, always room.

        A checkpoint's details are ours alone (hashes, base64, a timestamp) and
        signed: redacting them could only corrupt the signature, so they skip it.
        """
        record: dict[str, Any] = {
            "v": "1",
            "seq": 0,
            "ts": self._ts.format(time.time_ns()),
            "type": type_name,
            "actor": _WRITER_ACTOR,
            "severity": severity,
            "outcome": outcome,
            "details": details if checkpoint else self._redactor.redact_details(type_name, details),
            "resource": self._resource,
            "prev": GENESIS,
        }
        problem = self._validator.check_built(record)
        if problem is not None:  # a bug of ours: say so loudly, never loop
            self.counters.dropped("internal_error")
            self._stderr.write(f"kerno-otel: audit: internal record invalid: {problem}\n")
            return
        writer = self._writer
        assert writer is not None
        line = self._chain.seal(record)
        if checkpoint:
            writer.put_checkpoint(line, orjson.dumps(details))
        else:
            writer.put(line)
        if self.stream_id is None and record["seq"] == 0:
            self.stream_id = self._chain.prev
        self._file_bytes += len(line) + 1
        if rotate and self._file_bytes >= self._max_bytes:
            self._rotate_locked("size")
        if self._signer is not None and not checkpoint and rotate:
            self._count_for_checkpoint()


def new_record(
    ts: str,
    type_name: Any,
    actor: Any,
    severity: str,
    outcome: Any,
    details: Any,
    resource: Any,
    trace_id: int | None = None,
    span_id: int | None = None,
) -> dict[str, Any]:
    """A record with its keys in line order (DESIGN.md); ``seq`` and ``prev`` are filled
    in when it is sealed."""
    record: dict[str, Any] = {
        "v": "1",
        "seq": 0,
        "ts": ts,
        "type": type_name,
        "actor": actor,
        "severity": severity,
        "outcome": outcome,
        "details": details,
        "resource": resource,
    }
    if trace_id:
        record["trace_id"] = f"{trace_id:032x}"
        if span_id:
            record["span_id"] = f"{span_id:016x}"
    record["prev"] = GENESIS
    return record


def clean_record(
    record: dict[str, Any], redactor: Redactor, validator: RecordValidator
) -> str | None:
    """The redact and validate stages on one built record: ``details`` is replaced by
    its redacted copy; the failing rule (never a value) or None when it may be sealed."""
    type_name = record["type"]
    details = record["details"]
    if type(details) is dict or isinstance(details, Mapping):
        try:
            record["details"] = redactor.redact_details(str(type_name), details)
        except ValueError as exc:  # nesting too deep or a cycle: say which, not what
            return f"{type_name}: /details: cannot be redacted ({exc})"
    return validator.check_built(record)


def make_processor(
    config: AuditConfig,
    *,
    event_types: Iterable[EventType] = (),
    redaction_rules: Iterable[RedactionRule] = (),
    resource: Mapping[str, str],
    version: str,
    stderr: TextIO | None = None,
) -> tuple[AuditProcessor, Redactor]:
    """An in-process processor (not yet opened) for the built-in types plus ``event_types``,
    and the redactor it uses."""
    extra = {t.name: t for t in event_types}
    types = {**BUILTIN_TYPES, **extra}
    schemas = SchemaSet.builtin().with_types(extra) if extra else SchemaSet.builtin()
    redactor = Redactor(
        [*config.redaction, *redaction_rules], {name: t.policies for name, t in types.items()}
    )
    processor = AuditProcessor(
        config,
        redactor=redactor,
        validator=RecordValidator(schemas),
        resource=resource,
        version=version,
        stderr=stderr,
    )
    return processor, redactor


def _type_name_ok(name: str) -> bool:
    import re

    return bool(re.fullmatch(r"[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+", name))
