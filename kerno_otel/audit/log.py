"""``AuditLog``: the public way to emit audit events, through an OpenTelemetry ``Logger``."""

from __future__ import annotations

import builtins
import contextlib
import os
import socket
import sys
import time
import uuid
from collections.abc import Iterable, Mapping
from types import TracebackType
from typing import Any, TextIO

from opentelemetry._logs import LogRecord, SeverityNumber
from opentelemetry.sdk._logs import LoggerProvider, LogRecordLimits, LogRecordProcessor
from opentelemetry.sdk.resources import Resource

from kerno_otel import __version__
from kerno_otel.audit.pipeline import build_processor
from kerno_otel.audit.processor import AuditProcessor
from kerno_otel.audit.record import ATTR_ACTOR, ATTR_DETAILS, ATTR_OUTCOME
from kerno_otel.audit.sdk import record_maker
from kerno_otel.config import AuditConfig
from kerno_otel.records.catalogue import BUILTIN_TYPES, EventType
from kerno_otel.records.redact import RedactionRule, Redactor
from kerno_otel.records.schema import SchemaSet

_SEVERITY_NUMBER = {
    "TRACE": SeverityNumber.TRACE,
    "DEBUG": SeverityNumber.DEBUG,
    "INFO": SeverityNumber.INFO,
    "WARN": SeverityNumber.WARN,
    "ERROR": SeverityNumber.ERROR,
    "FATAL": SeverityNumber.FATAL,
}


def default_resource() -> dict[str, str]:
    """``service.name``, ``service.instance.id`` and ``host.name`` of this process."""
    return {
        "service.name": os.environ.get("OTEL_SERVICE_NAME", "kerno"),
        "service.instance.id": str(uuid.uuid4()),
        "host.name": socket.gethostname(),
    }


class _AuditProvider(LoggerProvider):
    """The ``AuditLog``'s provider: it tells the audit processor when another processor
    joins, before that one can see a record, so records are cleaned for it."""

    audit_processor: AuditProcessor | None = None

    def add_log_record_processor(self, log_record_processor: LogRecordProcessor) -> None:
        if self.audit_processor is not None and log_record_processor is not self.audit_processor:
            self.audit_processor.others_present()
        super().add_log_record_processor(log_record_processor)


class AuditLog:
    """Emit audit events; each becomes a redacted, validated, hash-chained line on disk.

    >>> log = AuditLog(AuditConfig(file_path="/tmp/audit.jsonl"))   # doctest: +SKIP
    >>> log.emit("bpf.load", details={"program": "fd_track", "attach": [], "success": True})
    >>> log.flush()

    ``emit`` never raises for a bad record: the record is rejected, counted and
    replaced by an ``audit.loss`` record (see docs/audit-schema.md).
    Opening raises :class:`kerno_otel.AuditFileError` when the log file cannot be
    used safely.
    """

    def __init__(
        self,
        config: AuditConfig | None = None,
        *,
        event_types: Iterable[EventType] = (),
        redaction_rules: Iterable[RedactionRule] = (),
        resource: Mapping[str, str] | None = None,
        stderr: TextIO | None = None,
    ) -> None:
        self.config = config if config is not None else AuditConfig()
        extra = {t.name: t for t in event_types}
        self._types: dict[str, EventType] = {**BUILTIN_TYPES, **extra}
        self.schemas = SchemaSet.builtin().with_types(extra) if extra else SchemaSet.builtin()
        self.resource = dict(resource) if resource is not None else default_resource()
        err = stderr if stderr is not None else sys.stderr
        self._processor = build_processor(
            self.config,
            event_types=extra.values(),
            rules=redaction_rules,
            resource=self.resource,
            version=__version__,
            stderr=err,
        )
        #: The redaction stage every record goes through (plugins redact free text with it).
        self.redactor: Redactor = self._processor.cleaner.redactor
        self.provider = _AuditProvider(
            resource=Resource.create(self.resource),
            shutdown_on_exit=False,
            # Every limit given, so the SDK reads no OTEL_*_LIMIT variable: they are meant
            # for telemetry, must not cut an audit record, and a malformed one made the SDK
            # raise here, after the log file was opened (exit 1 for a telemetry setting).
            log_record_limits=LogRecordLimits(*(LogRecordLimits.UNSET,) * 4),
        )
        # First on the provider: every processor added later sees clean records only.
        self.provider.add_log_record_processor(self._processor)
        self.provider.audit_processor = self._processor
        self._logger = self.provider.get_logger("kerno_otel.audit", __version__)
        self._make = record_maker(self.provider, self._logger, err)
        self._closed = False

    def emit(
        self,
        type: str,
        *,
        actor: str | None = None,
        details: Mapping[str, Any] | None = None,
        outcome: str = "success",
        severity: str | None = None,
        cycle_id: str | None = None,
        trace_id: int | None = None,
        span_id: int | None = None,
    ) -> None:
        """Emit one audit event.

        ``actor`` and ``severity`` default to the event type's (the catalogue in
        docs/audit-schema.md); ``outcome`` is ``success``, ``failure`` or
        ``unknown``; ``severity`` is an OTel severity text (``INFO``, ``WARN``,
        ``ERROR``, ``FATAL``); ``cycle_id`` is a shorthand that puts it in
        ``details``. Returns once the record is handed over (``fsync: always``:
        once it is on disk). Never raises: a record that cannot be written is
        refused and its loss written instead.
        """
        # Exact str only: a subclass could raise from __hash__ or __eq__ in a lookup.
        event = self._types.get(type) if builtins.type(type) is str else None
        if actor is None:
            actor = event.actor if event is not None and not event.actor.endswith("/") else ""
        if severity is None:
            severity = event.severity if event is not None else "INFO"
        payload: Any = details if details is not None else {}
        if cycle_id is not None:
            # Not a mapping, or one whose iteration raises: refused by the pipeline.
            with contextlib.suppress(Exception):
                payload = {**payload, "cycle_id": cycle_id}
        attributes: dict[str, Any] = {
            ATTR_ACTOR: actor,
            ATTR_OUTCOME: outcome,
            ATTR_DETAILS: payload,
        }
        # Trace and span ids come from the active span, unless given.
        record = LogRecord(
            timestamp=time.time_ns(),
            severity_number=_SEVERITY_NUMBER.get(severity, SeverityNumber.UNSPECIFIED)
            if builtins.type(severity) is str
            else SeverityNumber.UNSPECIFIED,
            severity_text=severity,
            event_name=type,
            attributes=attributes,
        )
        if trace_id is not None:
            record.trace_id = trace_id
        elif record.trace_id and not record.trace_flags.sampled:
            # A span the sampler dropped is never exported: its ids would point at nothing.
            record.trace_id = record.span_id = 0
        if span_id is not None:
            record.span_id = span_id
        # The SDK's Logger.emit takes a ReadWriteLogRecord as it is (its overloads
        # only name the API LogRecord); see kerno_otel.audit.sdk.
        self._logger.emit(self._make(record))

    def flush(self, timeout: float | None = 30.0) -> bool:
        """Return once everything emitted before the call is durable; False on timeout."""
        # None, inf or NaN: as long as it takes (the SDK takes milliseconds as an int).
        millis = 2**31 if timeout is None or not timeout < 2**31 / 1000 else int(timeout * 1000)
        return self._processor.force_flush(millis)

    def close(self) -> None:
        """Flush and close the log. Safe to call twice."""
        if self._closed:
            return
        self._closed = True
        self.provider.shutdown()

    def stats(self) -> dict[str, Any]:
        """The pipeline's counters: written, dropped by reason, validation failures, fsyncs…"""
        return self._processor.stats()

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called (readiness probes read this)."""
        return self._closed

    @property
    def event_types(self) -> Mapping[str, EventType]:
        return dict(self._types)

    def __enter__(self) -> AuditLog:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
