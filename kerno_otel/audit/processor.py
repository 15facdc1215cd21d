"""The OpenTelemetry side of the pipeline: a ``LogRecordProcessor`` and the transports behind it.

:class:`AuditProcessor` is registered first on the ``AuditLog``'s provider. For
each record it runs the clean half (:class:`kerno_otel.audit.record.Cleaner`)
and puts the redacted ``details`` back on the record, so every processor or
exporter after it sees what the file will hold, never a raw value. Then it
hands the clean body to a transport: :class:`LocalTransport` seals it in this
process, :class:`kerno_otel.audit.worker.client.WorkerTransport` in the audit
worker. While no other processor is on the provider, the worker transport
takes records as emitted instead, and the same Cleaner runs in the worker's
clean stage: the emitting thread then pays only for encoding the fields.
Everything about "after shutdown", ``fsync: always`` and stats lives here once.
"""

from __future__ import annotations

import threading
import time
from collections.abc import MutableMapping
from typing import Any, Protocol, TextIO

from opentelemetry.sdk._logs import LogRecordProcessor, ReadWriteLogRecord

from kerno_otel.audit.counters import Counters, merged
from kerno_otel.audit.record import (
    ATTR_ACTOR,
    ATTR_DETAILS,
    ATTR_OUTCOME,
    Clean,
    Cleaner,
    Fields,
    Refused,
)
from kerno_otel.audit.sealer import Sealer


class Transport(Protocol):
    """Carries clean records to a :class:`~kerno_otel.audit.sealer.Sealer` and back its answers."""

    def open(self) -> None:
        """Open the log (raises what opening it raises)."""

    def send(self, clean: Clean, *, durable: bool) -> None:
        """Hand one clean record over; with ``durable``, return once it is on disk."""

    def send_raw(self, fields: Fields, *, durable: bool) -> bool:
        """Hand a record over as emitted, to be cleaned beyond this process's emitting
        thread; False when this transport cannot (the caller cleans it here)."""

    def refuse(self, refused: Refused) -> None:
        """Hand over a record that may not be written (its loss is written instead)."""

    def flush(self, timeout: float | None) -> bool:
        """Return once everything handed over before is durable; False on timeout."""

    def stats(self) -> dict[str, Any]:
        """The sealer's counters, with the transport's own added."""

    def close(self) -> None:
        """Finish the log: everything handed over is written, then the file is closed."""


class LocalTransport:
    """``audit.pipeline: thread``: the sealer runs in this process, on the emitting thread."""

    def __init__(self, sealer: Sealer) -> None:
        self.sealer = sealer

    def open(self) -> None:
        self.sealer.open()

    def send(self, clean: Clean, *, durable: bool) -> None:
        ticket = self.sealer.put(clean.body)
        if durable and ticket is not None:
            self.sealer.wait_durable(ticket)

    def send_raw(self, fields: Fields, *, durable: bool) -> bool:
        return False  # one process: the emitting thread cleans

    def refuse(self, refused: Refused) -> None:
        self.sealer.refused(refused.type, refused.problem)

    def flush(self, timeout: float | None) -> bool:
        return self.sealer.flush(timeout)

    def stats(self) -> dict[str, Any]:
        return self.sealer.counters.as_dict()

    def close(self) -> None:
        self.sealer.close()


class AuditProcessor(LogRecordProcessor):
    """Cleans every record on the emitting thread and hands it to a transport. Thread-safe."""

    def __init__(
        self, cleaner: Cleaner, transport: Transport, *, always: bool, stderr: TextIO
    ) -> None:
        self.cleaner = cleaner
        self.transport = transport
        self._always = always
        self._stderr = stderr
        self._counters = Counters()  # records refused after shutdown
        self._lock = threading.Lock()
        self._closed = False
        # Whether records may leave the emitting thread uncleaned: only to the audit
        # worker's clean stage, and only while nothing else on the provider sees them.
        self._raw = True

    def others_present(self) -> None:
        """Another processor joins the provider: from now on every record is cleaned on
        the emitting thread, before that processor (or its exporter) sees it."""
        self._raw = False

    def on_emit(self, log_record: ReadWriteLogRecord) -> None:
        """Called by the SDK for every record; never raises into the emitter."""
        lr = log_record.log_record
        attrs = lr.attributes if lr.attributes is not None else {}
        try:
            fields = Fields(
                lr.timestamp or time.time_ns(),
                lr.event_name,
                attrs.get(ATTR_ACTOR),
                "INFO" if lr.severity_text is None else lr.severity_text,
                attrs.get(ATTR_OUTCOME, "unknown"),
                attrs.get(ATTR_DETAILS),
                lr.trace_id,
                lr.span_id,
            )
        except Exception:  # attributes that are not a mapping: nothing of them is read
            fields = Fields(time.time_ns(), lr.event_name, None, "INFO", "unknown", None)
        if self._raw and not self._closed and self.transport.send_raw(fields, durable=self._always):
            return
        result = self.cleaner.clean(fields)
        # Processors after this one see what the file holds: never a raw value.
        if isinstance(result, Clean):
            if type(attrs) is dict or isinstance(attrs, MutableMapping):
                attrs[ATTR_DETAILS] = result.details
        else:
            _scrub(log_record, result)
        if self._closed:
            with self._lock:
                self._counters.dropped("closed")
                first = self._counters.records_dropped["closed"] == 1
            if first:  # once: a busy emitter racing shutdown must not flood stderr
                self._stderr.write(
                    "kerno-otel: audit: records were emitted after shutdown; not written "
                    "(counted in stats as records_dropped.closed)\n"
                )
            return
        if isinstance(result, Clean):
            self.transport.send(result, durable=self._always)
        else:
            self.transport.refuse(result)

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        """Return once everything emitted before the call is durable (per the fsync policy)."""
        return self.transport.flush(timeout_millis / 1000.0)

    def shutdown(self) -> None:
        """Finish the log. Safe twice."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self.transport.close()

    def stats(self) -> dict[str, Any]:
        """Every counter of the pipeline, redactions (made on the emitting side) included."""
        with self._lock:
            own = self._counters.as_dict()
        own["redactions"] = dict(self.cleaner.redactor.counts)
        return merged(self.transport.stats(), own)


def _scrub(log_record: ReadWriteLogRecord, refused: Refused) -> None:
    """What other processors see of a refused record: nothing the producer gave but a
    well-formed type name (any field may be what made it refusable)."""
    lr = log_record.log_record
    lr.event_name = refused.type
    lr.severity_text = None
    lr.trace_id = lr.span_id = 0
    lr.body = None
    lr.attributes = {ATTR_DETAILS: {}}
