"""The clean half of the pipeline: build → redact → validate → encode, in the emitting process.

Every record runs these stages on the emitting thread, before any other
OpenTelemetry processor or exporter on the provider, the audit worker, a file
or stderr sees it (in both ``audit.pipeline`` modes): what leaves the
``AuditLog`` is already clean. The result is a :class:`Clean` body for the
sealing half (:mod:`kerno_otel.audit.sealer`), or a :class:`Refused` naming the
rule broken, never a value. Nothing here raises into the emitter.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any, Final, NamedTuple

from kerno_otel.audit.chain import GENESIS, Timestamps, body_of
from kerno_otel.records.redact import Redactor
from kerno_otel.records.validate import RecordValidator

#: Attribute names of the OTLP mapping: every field but type, severity, ts and the
#: ids lives under ``kerno.audit.*``.
ATTR_ACTOR: Final = "kerno.audit.actor"
ATTR_OUTCOME: Final = "kerno.audit.outcome"
ATTR_DETAILS: Final = "kerno.audit.details"

#: The writer's own records: a producer that emits one is refused (its loss record
#: is always the writer's own word).
WRITER_PREFIX: Final = "audit."
WRITER_ACTOR: Final = "audit/writer"

_TRACE_LIMIT: Final = 1 << 128
_SPAN_LIMIT: Final = 1 << 64


class Fields(NamedTuple):
    """What an emitter hands over: the record before the pipeline touched it."""

    ts_ns: int
    type: Any
    actor: Any
    severity: Any
    outcome: Any
    details: Any
    trace_id: Any = 0
    span_id: Any = 0


class Clean(NamedTuple):
    """A record that may be sealed: its encoded body and its redacted ``details``."""

    type: str
    body: bytes
    details: dict[str, Any]


class Refused(NamedTuple):
    """A record that may not be written: its type (when it is a valid name) and why."""

    type: str | None
    problem: str


def _id_hex(value: Any, limit: int, width: int) -> str | None:
    if type(value) is not int or not 0 < value < limit:
        raise ValueError
    return f"{value:0{width}x}"


class Cleaner:
    """Builds, redacts, validates and encodes records of one stream's resource. Thread-safe."""

    def __init__(self, redactor: Redactor, validator: RecordValidator, resource: Mapping[str, str]):
        self.redactor = redactor
        self.validator = validator
        self.resource = dict(resource)
        self._ts = Timestamps()

    def clean(self, fields: Sequence[Any]) -> Clean | Refused:
        """One producer's record through the stages; never raises.

        Refused: a writer type (``audit.*``), ids that are not 128/64-bit
        integers, ``details`` that cannot be redacted, anything the schema rejects.
        """
        name = fields[1]  # a Fields, or the same eight values as a list (the worker's)
        if not self.validator.knows(name):  # never named: an unknown name may carry a value
            return Refused(None, "(unknown type): /type: not an event type of this log")
        known: str = name
        try:
            if known.startswith(WRITER_PREFIX):
                return Refused(known, f"{known}: /type: reserved for the audit writer")
            return self._clean(fields, redact=True)
        except Exception as exc:  # a hostile Mapping: say what broke, never the value
            return Refused(known, _unexpected(known, exc))

    def clean_own(
        self,
        name: str,
        details: dict[str, Any],
        severity: str,
        outcome: str,
        *,
        redact: bool = True,
    ) -> Clean | Refused:
        """The writer's own record (``audit.*``): the same stages, ``redact=False`` for a
        signed checkpoint (redaction could only corrupt its signature)."""
        fields = Fields(time.time_ns(), name, WRITER_ACTOR, severity, outcome, details)
        try:
            return self._clean(fields, redact=redact)
        except Exception as exc:  # a bug of ours: the sealer says so loudly
            return Refused(name, _unexpected(name, exc))

    def _clean(self, fields: Sequence[Any], *, redact: bool) -> Clean | Refused:
        ts_ns, name, actor, severity, outcome, details, trace_id, span_id = fields
        if redact and (type(details) is dict or isinstance(details, Mapping)):
            try:
                details = self.redactor.redact_details(str(name), details)
            except ValueError as exc:  # nesting too deep or a cycle: say which, not what
                return Refused(name, f"{name}: /details: cannot be redacted ({exc})")
        record: dict[str, Any] = {
            "v": "1",
            "seq": 0,
            "ts": self._ts.format(ts_ns),
            "type": name,
            "actor": actor,
            "severity": severity,
            "outcome": outcome,
            "details": details,
            "resource": self.resource,
        }
        if span_id and not trace_id:
            return Refused(name, f"{name}: /span_id: given without a trace_id")
        if trace_id:
            try:
                record["trace_id"] = _id_hex(trace_id, _TRACE_LIMIT, 32)
                if span_id:
                    record["span_id"] = _id_hex(span_id, _SPAN_LIMIT, 16)
            except ValueError:
                return Refused(name, f"{name}: /trace_id: not a valid id")
        record["prev"] = GENESIS
        problem = self.validator.check_built(record)
        if problem is not None:
            return Refused(name, problem)
        # The schema accepted the type: a well-formed name.
        return Clean(name, body_of(record), details)


def _unexpected(name: str | None, exc: Exception) -> str:
    return f"{name or '(unknown type)'}: (root): cannot be processed ({type(exc).__name__})"
