"""Value checks every section shares: :class:`ConfigError`, durations, and every number's range.

:data:`NUMBERS` is the one table of the numeric keys: each has a kind (whole number,
number, duration) and a range, and :func:`check_number` refuses anything else —
booleans, text, NaN, infinities, values too large to mean anything (issue 11,
item 12: ``max_size_mb: .nan`` used to reach the writer thread).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from typing import Any, Final, Literal, NamedTuple

import yaml


class ConfigError(ValueError):
    """A configuration problem, worded for the operator: where, which key, why."""


#: Says where a dotted key's value came from: ``FILE:LINE: audit.fsync`` or ``KERNO_AUDIT_FSYNC``.
Where = Callable[[str], str]


_DURATION = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*(ms|s|m|h|d)?\s*$")
_UNIT_SECONDS: Final = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}
_DURATION_HINT: Final = "expected a duration like 30s, 5m or 24h"
_DAY: Final = 86_400.0


def parse_duration(value: object) -> float:
    """Seconds from ``30``, ``"30s"``, ``"5m"``, ``"24h"``, ``"500ms"``; ValueError otherwise.

    NaN, infinities and negative numbers are not durations.
    """
    seconds: float | None = None
    if isinstance(value, bool):
        seconds = None
    elif isinstance(value, int | float):
        seconds = float(value) if _finite(value) else None
    elif isinstance(value, str):
        match = _DURATION.match(value)
        if match:
            seconds = float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
    if seconds is None or not math.isfinite(seconds) or seconds < 0:
        raise ValueError(_DURATION_HINT)
    return seconds


def env_value(text: str) -> Any:
    """A ``KERNO_*`` variable's value, read as YAML (``10``, ``true``, ``[a, b]``) or as text."""
    try:
        return yaml.safe_load(text) if text.strip() else None
    except yaml.YAMLError:
        return text


def number(value: Any) -> float:
    """A finite int or float (not a bool) as a float; ValueError naming the value otherwise."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not _finite(value):
        raise ValueError(f"expected a number, got {value!r}")
    return float(value)


# --- the numeric keys --------------------------------------------------------------------------


class Bound(NamedTuple):
    """What one numeric key takes: its kind and the closed range ``low``..``high``."""

    kind: Literal["whole", "number", "duration"]
    low: float
    high: float
    #: Whether ``low`` itself is refused (``max_size_mb`` must be more than 0).
    above_low: bool = False


#: Every numeric key of the embedded sections. The upper bounds are far beyond any
#: sensible setting and well inside what the code can hold (a queue, a timer, a pipe).
NUMBERS: Final[dict[str, Bound]] = {
    "audit.max_size_mb": Bound("number", 0, 1_048_576, above_low=True),  # 1 TiB
    "audit.max_backups": Bound("whole", 0, 1_000_000),
    "audit.max_age_days": Bound("number", 0, 36_500),
    "audit.rotate_interval": Bound("duration", 1, 366 * _DAY),
    "audit.fsync_interval_ms": Bound("whole", 0, 60_000),
    "audit.queue_size": Bound("whole", 16, 16_777_216),
    "audit.checkpoint.every_records": Bound("whole", 1, 1_000_000_000),
    "audit.checkpoint.every_seconds": Bound("duration", 0, 31 * _DAY, above_low=True),
    "otlp.timeout": Bound("duration", 0, 3_600),
    "otlp.batch_size": Bound("whole", 0, 1_000_000),
    "doctor.duration": Bound("duration", 0, _DAY),
    "doctor.interval": Bound("duration", 0, 31 * _DAY),
    "ai.max_tokens": Bound("whole", 0, 10_000_000),
    "ai.temperature": Bound("number", 0, 2),
    "ai.cache_ttl": Bound("duration", 0, 366 * _DAY),
    "ai.rate_limit_per_minute": Bound("whole", 0, 1_000_000),
    "ai.timeout": Bound("duration", 0, 3_600),
    "telemetry.metric_export_interval": Bound("duration", 0, _DAY, above_low=True),
    # doctor.thresholds.*: nanoseconds up to an hour, percentages, a rate.
    **{
        f"doctor.thresholds.{name}": Bound("number", 0, 3_600_000_000_000)
        for name in (
            "syscall_p99_warning_ns",
            "syscall_p99_critical_ns",
            "disk_p99_warning_ns",
            "disk_p99_critical_ns",
            "sched_delay_warning_ns",
            "sched_delay_critical_ns",
        )
    },
    "doctor.thresholds.tcp_retransmit_pct": Bound("number", 0, 100),
    "doctor.thresholds.oom_memory_pct": Bound("number", 0, 100),
    "doctor.thresholds.fd_growth_per_sec": Bound("number", 0, 1_000_000_000),
}


def check_number(dotted: str, value: Any) -> float:
    """``value`` of the numeric key ``dotted``, checked against :data:`NUMBERS`.

    Returns the number (seconds for a duration); ValueError saying what is expected
    and what was given. Whole numbers come back as ``int``, the others as ``float``.
    """
    bound = NUMBERS[dotted]
    amount: float | None
    if bound.kind == "duration":
        try:
            amount = parse_duration(value)
        except ValueError:
            raise ValueError(f"{_DURATION_HINT}, got {_given(value)}") from None
    elif _usable(value, whole=bound.kind == "whole"):
        amount = value if bound.kind == "whole" else float(value)
    else:
        amount = None
    if (
        amount is None
        or amount < bound.low
        or amount > bound.high
        or (bound.above_low and amount == bound.low)
    ):
        raise ValueError(f"{_expected(bound)}, got {_given(value)}")
    return amount


def _expected(bound: Bound) -> str:
    what = {"whole": "a whole number", "number": "a number", "duration": "a duration"}[bound.kind]
    unit = "s" if bound.kind == "duration" else ""
    low, high = _fmt(bound.low) + unit, _fmt(bound.high) + unit
    if bound.above_low:
        return f"expected {what} above {low}, up to {high}"
    return f"expected {what} from {low} to {high}"


def _fmt(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else str(x)


def _given(value: Any) -> str:
    if isinstance(value, float) and math.isnan(value):
        return "NaN"
    if isinstance(value, float) and math.isinf(value):
        return "infinity" if value > 0 else "-infinity"
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) > 10**15:
        return f"a {value.bit_length()}-bit number"
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _usable(value: Any, *, whole: bool) -> bool:
    """An int (or, unless ``whole``, a finite float); never a bool."""
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return True
    return not whole and isinstance(value, float) and math.isfinite(value)


def _finite(value: int | float) -> bool:
    if isinstance(value, int):
        return True
    return math.isfinite(value)
