"""``AuditLog``: the public way to emit audit events, through an OpenTelemetry ``Logger``."""

from __future__ import annotations

import collections
import os
import socket
import sys
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict
from types import TracebackType
from typing import Any, TextIO

from opentelemetry._logs import LogRecord, SeverityNumber
from opentelemetry.sdk._logs import LoggerProvider, ReadWriteLogRecord
from opentelemetry.sdk.resources import Resource

from kerno_otel import __version__
from kerno_otel.audit.processor import (
    ATTR_ACTOR,
    ATTR_DETAILS,
    ATTR_OUTCOME,
    AuditProcessor,
)
from kerno_otel.audit.worker.client import WorkerProcessor
from kerno_otel.config.load import AuditConfig
from kerno_otel.records.catalogue import BUILTIN_TYPES, EventType
from kerno_otel.records.redact import RedactionRule, Redactor
from kerno_otel.records.schema import SchemaSet
from kerno_otel.records.validate import RecordValidator

_SEVERITY_NUMBER = {
    "TRACE": SeverityNumber.TRACE,
    "DEBUG": SeverityNumber.DEBUG,
    "INFO": SeverityNumber.INFO,
    "WARN": SeverityNumber.WARN,
    "ERROR": SeverityNumber.ERROR,
    "FATAL": SeverityNumber.FATAL,
}


class _AuditLogRecord(ReadWriteLogRecord):
    """A ``ReadWriteLogRecord`` that skips the SDK's attribute cleaning.

    The SDK wraps attributes in ``BoundedAttributes`` and cleans every nested
    value (about 8 µs of a 14 µs emit, measured); our processor validates the
    record against the published JSON Schema, which is stricter, so the
    cleaning buys nothing here. Records from other producers on the same
    provider still get the SDK's own treatment.
    """

    def __post_init__(self) -> None:
        pass


def default_resource() -> dict[str, str]:
    """``service.name``, ``service.instance.id`` and ``host.name`` of this process."""
    return {
        "service.name": os.environ.get("OTEL_SERVICE_NAME", "kerno"),
        "service.instance.id": str(uuid.uuid4()),
        "host.name": socket.gethostname(),
    }


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
        policies = {name: t.policies for name, t in self._types.items()}
        self.redactor = Redactor([*self.config.redaction, *redaction_rules], policies)
        self.resource = dict(resource) if resource is not None else default_resource()
        self._processor: AuditProcessor | WorkerProcessor
        err = stderr if stderr is not None else sys.stderr
        if self.config.pipeline == "process":
            self._processor = WorkerProcessor(
                self.config,
                event_types=tuple(extra.values()),
                redaction_rules=tuple(redaction_rules),
                validator=RecordValidator(self.schemas),
                redactor=self.redactor,
                resource=self.resource,
                version=__version__,
                stderr=err,
            )
        else:
            self._processor = AuditProcessor(
                self.config,
                redactor=self.redactor,
                validator=RecordValidator(self.schemas),
                resource=self.resource,
                version=__version__,
                stderr=err,
            )
        self._processor.open()
        self.provider = LoggerProvider(
            resource=Resource.create(self.resource), shutdown_on_exit=False
        )
        self.provider.add_log_record_processor(self._processor)
        self._logger = self.provider.get_logger("kerno_otel.audit", __version__)
        # Pre-bound for the hot path (see _AuditLogRecord).
        self._otel_resource = self.provider.resource
        self._limits = self.provider._log_record_limits
        self._scope = self._logger.instrumentation_scope  # type: ignore[attr-defined]
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

        ``actor`` and ``severity`` default to the event type's (DESIGN.md's
        catalogue); ``cycle_id`` is a shorthand that puts it in ``details``.
        Returns once the record is queued (``fsync: always``: once it is on disk).
        """
        event = self._types.get(type)
        if actor is None:
            actor = event.actor if event is not None and not event.actor.endswith("/") else ""
        if severity is None:
            severity = event.severity if event is not None else "INFO"
        payload: Mapping[str, Any] = details if details is not None else {}
        if cycle_id is not None:
            payload = {**payload, "cycle_id": cycle_id}
        attributes: dict[str, Any] = {
            ATTR_ACTOR: actor,
            ATTR_OUTCOME: outcome,
            ATTR_DETAILS: payload,
        }
        # Trace and span ids come from the active span, unless given.
        record = LogRecord(
            timestamp=time.time_ns(),
            severity_number=_SEVERITY_NUMBER.get(severity, SeverityNumber.UNSPECIFIED),
            severity_text=severity,
            event_name=type,
            attributes=attributes,
        )
        if trace_id is not None:
            record.trace_id = trace_id
        if span_id is not None:
            record.span_id = span_id
        # The SDK's Logger.emit takes a ReadWriteLogRecord as it is (its overloads
        # only name the API LogRecord).
        self._logger.emit(
            _AuditLogRecord(record, self._otel_resource, self._scope, self._limits)  # type: ignore[call-overload]
        )

    def flush(self, timeout: float | None = 30.0) -> bool:
        """Return once everything emitted before the call is durable; False on timeout."""
        millis = 2**31 if timeout is None else int(timeout * 1000)
        return self._processor.force_flush(millis)

    def close(self) -> None:
        """Flush and close the log. Safe to call twice."""
        if self._closed:
            return
        self._closed = True
        self.provider.shutdown()

    def stats(self) -> dict[str, Any]:
        """The pipeline's counters: written, dropped by reason, validation failures, fsyncs…"""
        processor = self._processor
        if isinstance(processor, WorkerProcessor):
            counters = processor.stats()
            redactions = collections.Counter(counters.get("redactions", {}))
            redactions.update(self.redactor.counts)  # redact_text calls made here
            counters["redactions"] = dict(redactions)
            return counters
        counters = asdict(processor.counters)
        counters["redactions"] = dict(self.redactor.counts)
        return counters

    @property
    def on_checkpoint(self) -> list[Callable[[dict[str, Any]], None]]:
        """Callbacks given each signed checkpoint's ``details`` as it is written.

        The hook for shipping checkpoints off-host (the OTLP forwarder); see
        :attr:`kerno_otel.audit.processor.AuditProcessor.on_checkpoint` for the rules.
        """
        return self._processor.on_checkpoint

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
