"""The pipeline's numbers, read by ``AuditLog.stats()`` and the metrics endpoint."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class Counters:
    """Counts kept by one part of the pipeline; :func:`merged` adds parts together."""

    records_written: int = 0
    records_dropped: dict[str, int] = field(default_factory=dict)
    validation_failures: int = 0
    write_errors: int = 0
    fsyncs: int = 0
    fsync_seconds_total: float = 0.0
    fsync_seconds_max: float = 0.0
    rotations: int = 0
    #: Interference with the live file noticed, by kind: renamed, removed, hard_link.
    file_faults: dict[str, int] = field(default_factory=dict)
    queue_depth: int = 0
    blocked_emits: int = 0
    redactions: dict[str, int] = field(default_factory=dict)

    def dropped(self, reason: str, count: int = 1) -> None:
        self.records_dropped[reason] = self.records_dropped.get(reason, 0) + count

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def merged(*parts: dict[str, Any]) -> dict[str, Any]:
    """Counters (as dicts) added together: numbers summed, maxima kept, maps merged by key."""
    total: dict[str, Any] = Counters().as_dict()
    for part in parts:
        for name, value in part.items():
            if isinstance(value, dict):
                into = total.setdefault(name, {})
                for key, count in value.items():
                    into[key] = into.get(key, 0) + count
            elif name.endswith("_max"):
                total[name] = max(total.get(name, 0), value)
            else:
                total[name] = total.get(name, 0) + value
    return total
