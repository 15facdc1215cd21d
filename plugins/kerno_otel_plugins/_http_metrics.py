"""``/metrics``: the audit pipeline's counters and the daemon's, in Prometheus text format 0.0.4."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Final

CONTENT_TYPE: Final = "text/plain; version=0.0.4; charset=utf-8"
PREFIX: Final = "kerno_otel_"

#: ``AuditLog.stats()`` key -> (metric name without prefix, type, help, label for a mapping).
#: Keys the pipeline adds later are still exported (as ``untyped``), so a new
#: counter shows up before this table learns its help text.
_PIPELINE: Final[dict[str, tuple[str, str, str, str | None]]] = {
    "records_written": (
        "records_written_total",
        "counter",
        "Audit records written to the log.",
        None,
    ),
    "records_dropped": (
        "records_dropped_total",
        "counter",
        "Audit records dropped, by reason (each also recorded as audit.loss).",
        "reason",
    ),
    "validation_failures": (
        "validation_failures_total",
        "counter",
        "Records that failed schema validation.",
        None,
    ),
    "write_errors": ("write_errors_total", "counter", "Errors writing the log file.", None),
    "fsyncs": ("fsyncs_total", "counter", "fsync calls on the log file.", None),
    "fsync_seconds_total": (
        "fsync_seconds_total",
        "counter",
        "Seconds spent in fsync on the log file.",
        None,
    ),
    "fsync_seconds_max": (
        "fsync_seconds_max",
        "gauge",
        "Longest single fsync on the log file, in seconds.",
        None,
    ),
    "rotations": ("rotations_total", "counter", "Log file rotations.", None),
    "file_faults": (
        "file_faults_total",
        "counter",
        "Interference with the live log file noticed (renamed, removed, hard_link), by kind.",
        "kind",
    ),
    "queue_depth": ("queue_depth", "gauge", "Records waiting to be written.", None),
    "blocked_emits": (
        "blocked_emits_total",
        "counter",
        "Emits that waited for queue space (back-pressure).",
        None,
    ),
    "redactions": (
        "redactions_total",
        "counter",
        "Values redacted from audit records, by kind.",
        "kind",
    ),
}


def render(
    stats: Mapping[str, Any],
    *,
    uptime_s: float,
    auth_failures: Mapping[str, int],
    auth_failure_records: int,
    auth_failures_pending: int,
    auth_sources_overflowed: int,
    connections_shed: int,
    reasons: Iterable[str] = ("token_missing", "token_mismatch", "mtls_failure"),
) -> bytes:
    """The exposition text: pipeline counters from ``stats``, then the daemon's own."""
    out: list[str] = []
    for key, value in stats.items():
        name, kind, help_text, label = _PIPELINE.get(
            key, (_metric_name(key), "untyped", f"Audit pipeline value {key}.", "key")
        )
        if isinstance(value, Mapping):
            samples = [(f"{label or 'key'}", str(k), v) for k, v in sorted(value.items(), key=str)]
            _family(out, name, kind, help_text, samples)
        elif _is_number(value):
            _family(out, name, kind, help_text, [(None, None, value)])
    _family(
        out,
        "uptime_seconds",
        "gauge",
        "Seconds since the daemon started.",
        [(None, None, uptime_s)],
    )
    failures = {reason: 0 for reason in reasons}
    failures.update(auth_failures)
    _family(
        out,
        "auth_failures_total",
        "counter",
        "HTTP requests refused, by reason (folded ones included).",
        [("reason", r, n) for r, n in sorted(failures.items())],
    )
    _family(
        out,
        "auth_failure_records_total",
        "counter",
        "auth.failure records written (flood control folds the rest).",
        [(None, None, auth_failure_records)],
    )
    _family(
        out,
        "auth_failures_pending",
        "gauge",
        "Refusals counted but not yet written (folded at the end of the interval).",
        [(None, None, auth_failures_pending)],
    )
    _family(
        out,
        "auth_sources_overflowed_total",
        "counter",
        "Refusals folded into the overflow key because the source table was full.",
        [(None, None, auth_sources_overflowed)],
    )
    _family(
        out,
        "http_connections_shed_total",
        "counter",
        "Connections closed unserved because every worker was busy.",
        [(None, None, connections_shed)],
    )
    return "".join(out).encode("utf-8")


def _family(
    out: list[str],
    name: str,
    kind: str,
    help_text: str,
    samples: Sequence[tuple[str | None, str | None, Any]],
) -> None:
    full = PREFIX + name
    out.append(f"# HELP {full} {_escape_help(help_text)}\n")
    out.append(f"# TYPE {full} {kind}\n")
    for label, label_value, value in samples:
        if not _is_number(value):
            continue
        labels = f'{{{label}="{_escape_label(label_value or "")}"}}' if label else ""
        out.append(f"{full}{labels} {_format(value)}\n")


def _metric_name(key: str) -> str:
    return "".join(c if c.isalnum() or c == "_" else "_" for c in key)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _format(value: float) -> str:
    if isinstance(value, int):
        return str(value)
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(value)


def _escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def _escape_label(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
