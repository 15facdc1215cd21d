"""The ``doctor`` section, checked (:class:`Settings`), and the diagnosis cycles' ids."""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Final

from kerno_otel.config import ConfigError, parse_duration
from kerno_otel.doctor.thresholds import resolve as resolve_thresholds

if TYPE_CHECKING:
    from kerno_otel.config import Config

#: ``doctor.duration`` bounds, in seconds (issue 4: 1s-5m).
MIN_DURATION: Final = 1.0
MAX_DURATION: Final = 300.0


# --- settings ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Settings:
    """The ``doctor`` section, checked: seconds, sink names, thresholds."""

    duration: float = 30.0
    interval: float = 60.0
    sinks: tuple[str, ...] = ("log",)
    thresholds: Mapping[str, float] = field(default_factory=dict)


def settings(
    config: Config,
    duration: str | float | None = None,
    declared: Mapping[str, float] | None = None,
) -> Settings:
    """The doctor settings of ``config``; ``duration`` overrides ``doctor.duration``.

    ``declared`` are the thresholds the loaded rules declare, with their defaults
    (None: not known yet, and threshold keys beyond kerno's are not checked).
    Raises ConfigError naming the key (``doctor.duration``) or ``--duration``.
    """
    section = config.section("doctor")
    key = "--duration" if duration is not None else "doctor.duration"
    raw = duration if duration is not None else section.get("duration", "30s")
    try:
        seconds = parse_duration(raw)
    except ValueError as exc:
        raise ConfigError(f"{key}: {exc}") from None
    if not MIN_DURATION <= seconds <= MAX_DURATION:
        raise ConfigError(f"{key}: expected a duration from 1s to 5m, got {raw!r}")
    try:
        interval = parse_duration(section.get("interval", "60s"))
    except ValueError as exc:
        raise ConfigError(f"doctor.interval: {exc}") from None
    if interval < MIN_DURATION:
        raise ConfigError(f"doctor.interval: expected at least 1s, got {interval:g}s")
    thresholds = resolve_thresholds(section.get("thresholds") or {}, declared)
    return Settings(seconds, interval, tuple(section.get("sinks") or ()), thresholds)


# --- cycle ids ---------------------------------------------------------------------------------


class CycleIds:
    """``cycle-YYYYMMDD-HHMMSS`` (UTC) ids, ``-N`` added when cycles start in the same second."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._second = ""
        self._count = 0

    def next(self, now: datetime | None = None) -> str:
        stamp = (now or datetime.now(UTC)).astimezone(UTC).strftime("%Y%m%d-%H%M%S")
        with self._lock:
            if stamp == self._second:
                self._count += 1
                return f"cycle-{stamp}-{self._count}"
            self._second, self._count = stamp, 0
            return f"cycle-{stamp}"


#: The process-wide generator: the daemon's cycles and any embedded ones share it.
CYCLE_IDS: Final = CycleIds()
