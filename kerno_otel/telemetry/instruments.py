"""The daemon's metric instruments, named by the semantic conventions (dots, units).

The audit pipeline's counters live where the records are written (in the
audit worker's process by default) and reach this process in the stats the
parent already asks for (``AuditLog.stats()``, a ``STATS`` frame); they are
observable instruments whose callbacks read one shared snapshot, taken at
most once per collection, so the worker exports nothing itself.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Final

from opentelemetry.metrics import CallbackOptions, Meter, Observation

#: Seconds: doctor cycles (1 s to 5 min windows) and LLM calls (ms to a minute).
_SECONDS_BUCKETS: Final = (
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1,
    2.5,
    5,
    10,
    30,
    60,
    120,
    300,
)
#: The GenAI semantic conventions' advisory boundaries for token counts.
_TOKEN_BUCKETS: Final = (
    1,
    4,
    16,
    64,
    256,
    1024,
    4096,
    16384,
    65536,
    262144,
    1048576,
    4194304,
)

#: ``AuditLog.stats()`` key -> (instrument, unit, description, attribute for a mapping).
PIPELINE_COUNTERS: Final[dict[str, tuple[str, str, str, str | None]]] = {
    "records_written": (
        "kerno.audit.records.written",
        "{record}",
        "Audit records written to the log.",
        None,
    ),
    "records_dropped": (
        "kerno.audit.records.dropped",
        "{record}",
        "Audit records dropped, by reason (each also recorded in-band as audit.loss).",
        "kerno.audit.drop.reason",
    ),
    "validation_failures": (
        "kerno.audit.validation.failures",
        "{record}",
        "Records refused by the schema.",
        None,
    ),
    "write_errors": ("kerno.audit.write.errors", "{error}", "Errors writing the log.", None),
    "rotations": ("kerno.audit.rotations", "{rotation}", "Log file rotations.", None),
    "file_faults": (
        "kerno.audit.file_faults",
        "{fault}",
        "Interference with the live log file noticed (renamed, removed, hard_link), by kind.",
        "kerno.audit.fault.kind",
    ),
    "redactions": (
        "kerno.audit.redactions",
        "{redaction}",
        "Values redacted from audit records, by kind.",
        "kerno.redaction.kind",
    ),
    "fsyncs": ("kerno.audit.fsyncs", "{fsync}", "fsync calls on the log file.", None),
    "fsync_seconds_total": (
        "kerno.audit.fsync.time",
        "s",
        "Time spent in fsync on the log file.",
        None,
    ),
    "blocked_emits": (
        "kerno.audit.emits.blocked",
        "{emit}",
        "Emits that waited for queue space.",
        None,
    ),
}
PIPELINE_GAUGES: Final[dict[str, tuple[str, str, str]]] = {
    "queue_depth": ("kerno.audit.queue.depth", "{record}", "Records waiting to be written."),
    "fsync_seconds_max": (
        "kerno.audit.fsync.max_duration",
        "s",
        "Longest single fsync on the log file.",
    ),
}


class _Snapshot:
    """``stats()`` taken at most once per ``ttl`` seconds: one ask for all callbacks."""

    def __init__(self, stats: Callable[[], Mapping[str, Any]], ttl: float = 0.2) -> None:
        self._stats = stats
        self._ttl = ttl
        self._lock = threading.Lock()
        self._at = -1e9
        self._value: Mapping[str, Any] = {}

    def get(self) -> Mapping[str, Any]:
        with self._lock:
            now = time.monotonic()
            if now - self._at > self._ttl:
                try:
                    self._value = self._stats()
                except Exception:  # metrics never raise into the host
                    self._value = {}
                self._at = now
            return self._value


def _observe(
    snapshot: _Snapshot, key: str, attribute: str | None
) -> Callable[[CallbackOptions], Iterable[Observation]]:
    def callback(options: CallbackOptions) -> Iterable[Observation]:
        value = snapshot.get().get(key)
        if isinstance(value, Mapping):
            if attribute is None:
                return []
            return [Observation(n, {attribute: str(k)}) for k, n in sorted(value.items())]
        if isinstance(value, int | float) and not isinstance(value, bool):
            return [Observation(value)]
        return []

    return callback


class Instruments:
    """Every instrument the core records into or observes."""

    def __init__(self, meter: Meter) -> None:
        self.meter = meter
        self.cycle_duration = meter.create_histogram(
            "kerno.doctor.cycle.duration",
            "s",
            "Duration of a diagnosis cycle, sampling window included.",
            explicit_bucket_boundaries_advisory=_SECONDS_BUCKETS,
        )
        self.findings = meter.create_counter(
            "kerno.doctor.findings", "{finding}", "Findings of doctor rules, by severity."
        )
        self.deliveries = meter.create_counter(
            "kerno.doctor.deliveries",
            "{delivery}",
            "Findings handed to sinks, by sink and outcome (each is a finding.emit record).",
        )
        self.ai_duration = meter.create_histogram(
            "gen_ai.client.operation.duration",
            "s",
            "Duration of an analyzer call to an LLM provider (GenAI semantic conventions).",
            explicit_bucket_boundaries_advisory=_SECONDS_BUCKETS,
        )
        self.ai_tokens = meter.create_histogram(
            "gen_ai.client.token.usage",
            "{token}",
            "Tokens per LLM call, by gen_ai.token.type (input/output).",
            explicit_bucket_boundaries_advisory=_TOKEN_BUCKETS,
        )
        #: Each loaded BPF program's lost-events count, read when metrics are collected.
        self._bpf_lost: dict[str, Callable[[], int]] = {}
        meter.create_observable_counter(
            "kerno.bpf.lost_events",
            [self._observe_bpf_lost],
            "{event}",
            "BPF events a program had to drop (full map or buffer), by program.",
        )
        self.reloads = meter.create_counter(
            "kerno.config.reloads", "{reload}", "Config reloads, by outcome."
        )

    def observe_bpf_lost(self, program: str, read: Callable[[], int]) -> None:
        """Export ``read()``, a loaded program's lost events so far, as a counter."""
        self._bpf_lost[program] = read

    def _observe_bpf_lost(self, options: CallbackOptions) -> Iterable[Observation]:
        out = []
        for program, read in sorted(self._bpf_lost.items()):
            try:
                out.append(Observation(int(read()), {"kerno.bpf.program": program}))
            except Exception:  # metrics never raise into the host; a closed program is skipped
                continue
        return out

    def observe_pipeline(self, stats: Callable[[], Mapping[str, Any]]) -> None:
        """Observable instruments over the audit pipeline's counters (``AuditLog.stats``)."""
        snapshot = _Snapshot(stats)
        for key, (name, unit, description, attribute) in PIPELINE_COUNTERS.items():
            self.meter.create_observable_counter(
                name, [_observe(snapshot, key, attribute)], unit, description
            )
        for key, (name, unit, description) in PIPELINE_GAUGES.items():
            self.meter.create_observable_gauge(
                name, [_observe(snapshot, key, None)], unit, description
            )
