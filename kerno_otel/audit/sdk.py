"""The one module that reaches into OpenTelemetry SDK internals, and the public path beside it.

``Logger.emit`` wraps an API ``LogRecord`` in a ``ReadWriteLogRecord`` whose
``__post_init__`` copies the attributes into ``BoundedAttributes`` and cleans
every nested value: about 8 µs of a 14 µs emit, measured, for a check the
pipeline's schema validation does more strictly. The fast path builds the
``ReadWriteLogRecord`` itself with that step skipped, from the provider's
``_log_record_limits`` and the logger's ``instrumentation_scope``.

Both are private. :func:`record_maker` checks, once, that they are what this
code was written against (``opentelemetry-sdk`` 1.45, pinned to that minor);
if not, it says so on stderr and falls back to the public ``Logger.emit``
path: slower, same records. ``tests/test_sdk.py`` fails loudly when the
installed SDK no longer takes the fast path.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, TextIO

from opentelemetry._logs import LogRecord
from opentelemetry.sdk._logs import LoggerProvider, ReadWriteLogRecord

#: The ``ReadWriteLogRecord`` fields the fast path fills, in order.
_FIELDS = ("log_record", "resource", "instrumentation_scope", "limits")


class _UncheckedRecord(ReadWriteLogRecord):
    """A ``ReadWriteLogRecord`` whose attributes are kept as given (no per-value cleaning).

    Records from other producers on the same provider still get the SDK's own
    treatment; other processors see these attributes as a plain ``dict``.
    """

    def __post_init__(self) -> None:
        pass


def record_maker(
    provider: LoggerProvider, logger: Any, stderr: TextIO
) -> Callable[[LogRecord], Any]:
    """A function turning an API ``LogRecord`` into what ``logger.emit`` should be given:
    the fast path's record, or the record itself (the public path)."""
    try:
        fields = tuple(f.name for f in dataclasses.fields(ReadWriteLogRecord))
        limits = provider._log_record_limits
        scope = logger.instrumentation_scope
        resource = provider.resource
        if fields[: len(_FIELDS)] != _FIELDS or not hasattr(ReadWriteLogRecord, "__post_init__"):
            raise TypeError(f"ReadWriteLogRecord fields are {fields}")
    except (AttributeError, TypeError) as exc:
        stderr.write(
            "kerno-otel: audit: this opentelemetry-sdk is not the one the fast emit path was "
            f"written for ({exc}); using the public path\n"
        )
        return lambda record: record

    def make(record: LogRecord) -> ReadWriteLogRecord:
        return _UncheckedRecord(record, resource, scope, limits)

    return make


def fast_path_available(provider: LoggerProvider, logger: Any) -> bool:
    """Whether :func:`record_maker` takes the fast path with the installed SDK."""
    import io

    stderr = io.StringIO()
    record_maker(provider, logger, stderr)
    return stderr.getvalue() == ""
