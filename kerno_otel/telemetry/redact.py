"""Span redaction: every span leaves the process with its name and attributes scrubbed.

The audit log's own redactor cleans them, so a span can no more carry a raw
IP, PID, path or secret than an audit record can. Done in an exporter
wrapper, the one place every span passes (ours and plugins' alike), rather
than at each ``set_attribute``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final

from opentelemetry.sdk.trace import Event, ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from opentelemetry.trace import Link, Status

#: Attribute keys whose value is an address or a process id whatever its type
#: (an integer pid would pass a text scrubber untouched).
_PID_KEYS: Final = ("pid", "process.pid", "process.parent_pid", "thread.id")
_IP_KEYS: Final = (
    "ip",
    "client.address",
    "server.address",
    "network.peer.address",
    "network.local.address",
    "source.address",
    "destination.address",
    "remote_ip",
)

Scrub = Callable[[str], str]


#: The last part of a key (after its last ``.`` or ``_``) that names a process or thread
#: id, or an address, whatever the value's type.
_PID_TAILS: Final = frozenset({"pid", "pids", "ppid", "tgid", "tid"})
_IP_TAILS: Final = frozenset({"ip", "ips", "addr", "address", "addresses"})


def _policy(key: str) -> str | None:
    lowered = key.lower()
    tail = lowered.replace("_", ".").rsplit(".", 1)[-1]
    if lowered in _PID_KEYS or tail in _PID_TAILS or lowered.endswith(("process_id", "process.id")):
        return "[REDACTED:pid]"
    if lowered in _IP_KEYS or tail in _IP_TAILS:
        return "[REDACTED:ip]"
    return None


def clean_value(scrub: Scrub, key: str, value: Any) -> Any:
    """``value`` of attribute ``key`` as it may leave the process."""
    fixed = _policy(key)
    if fixed is not None:
        return fixed
    if isinstance(value, str):
        return scrub(value)
    if isinstance(value, tuple | list):
        return tuple(scrub(v) if isinstance(v, str) else v for v in value)
    return value


def clean_attributes(scrub: Scrub, attributes: Mapping[str, Any] | None) -> dict[str, Any]:
    """Keys and values scrubbed: a key is free text a plugin chose, as much as a value."""
    return {scrub(k): clean_value(scrub, k, v) for k, v in (attributes or {}).items()}


def clean_span(scrub: Scrub, span: ReadableSpan) -> ReadableSpan:
    """A copy of ``span`` with its name, attributes, events, links and status scrubbed."""
    status = span.status
    if status.description:
        status = Status(status.status_code, scrub(status.description))
    return ReadableSpan(
        name=scrub(span.name),
        context=span.context,
        parent=span.parent,
        resource=span.resource,
        attributes=clean_attributes(scrub, span.attributes),
        events=[
            Event(scrub(e.name), clean_attributes(scrub, e.attributes), e.timestamp)
            for e in span.events
        ],
        links=[Link(link.context, clean_attributes(scrub, link.attributes)) for link in span.links],
        kind=span.kind,
        status=status,
        start_time=span.start_time,
        end_time=span.end_time,
        instrumentation_scope=span.instrumentation_scope,
    )


class RedactingSpanExporter(SpanExporter):
    """Wraps an exporter: it sees only scrubbed copies of the spans. Never raises."""

    def __init__(self, inner: SpanExporter, scrub: Scrub) -> None:
        self.inner = inner
        self._scrub = scrub

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        try:
            cleaned = [clean_span(self._scrub, span) for span in spans]
        except Exception:
            # A span we cannot clean is not sent raw.
            return SpanExportResult.FAILURE
        return self.inner.export(cleaned)

    def shutdown(self) -> None:
        self.inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self.inner.force_flush(timeout_millis)
