"""Repeated plugin failures folded: the first written at once, the repeats counted, never lost.

A doctor rule (or a source factory) that raises in every cycle would otherwise be
one ``plugin.error`` record and one stderr line per cycle: 8,640 a day at a 10 s
interval. The design mirrors ``auth.failure``'s flood control. Per (plugin, hook,
error type):

- the first failure is written at once, as an ordinary ``plugin.error`` (no
  ``suppressed`` field: the record stands for that one failure);
- identical repeats are only counted;
- the repeats are written as one folded record, with ``suppressed``, ``first_ts``
  and ``last_ts``, when the hook succeeds again (:meth:`FailureFold.recovered`),
  when it raises a different error type (whose first failure is then written at
  once), when :attr:`FailureFold.interval` has passed since the fold began (while
  it keeps failing, or at :meth:`FailureFold.tick` if it stopped being called), and
  at :meth:`FailureFold.close`.

A folded record stands for ``1 + suppressed`` failures, the first at ``first_ts``
and the last at ``last_ts`` (its ``error_digest`` is the last one's), so the sum of
``1 + suppressed`` over a hook's ``plugin.error`` records is exactly the number of
times it failed. Every record has its stderr line, folded records included.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final, TextIO

from kerno_otel.audit.chain import Timestamps
from kerno_otel.contract import PluginInfo
from kerno_otel.daemon.failures import PluginFailure, failure_line, failure_of, record_failures

#: Seconds a fold may grow while the hook keeps failing before its record is written.
FOLD_INTERVAL_S: Final = 300.0

_TIMESTAMPS = Timestamps()


@dataclass
class _Fold:
    """The failures of one (plugin, hook) since its last written record."""

    error_type: str
    #: ``clock()`` when the fold began (the first failure, or the last record written).
    began: float
    #: Repeats counted and not written yet, the last of them, and their first and last ts.
    repeats: int = 0
    last: PluginFailure | None = None
    first_ts: str = ""
    last_ts: str = ""


class FailureFold:
    """Writes a plugin's failures in a rule or source factory as folded ``plugin.error`` records.

    Keep one across doctor cycles (the daemon's cycle thread does, and hands it to
    every :func:`~kerno_otel.build_doctor`), and :meth:`close` it when the cycles
    stop. Thread-safe; records are emitted under the lock, so a fold's record never
    precedes the record of the failure that opened it. After :meth:`close` every
    failure is written at once.
    """

    def __init__(
        self,
        audit: Any,
        stderr: TextIO,
        *,
        interval: float = FOLD_INTERVAL_S,
        clock: Callable[[], float] = time.monotonic,
        wall_ns: Callable[[], int] = time.time_ns,
    ) -> None:
        if interval <= 0:
            raise ValueError("interval must be > 0")
        self.audit = audit
        self.stderr = stderr
        self.interval = interval
        self._clock = clock
        self._wall_ns = wall_ns
        self._lock = threading.Lock()
        self._folds: dict[tuple[str, str], _Fold] = {}
        self._closed = False
        #: Every failure seen, and ``plugin.error`` records written for them.
        self.failures = 0
        self.records = 0

    def failed(
        self, owners: Mapping[str, PluginInfo], where: str, exc: BaseException
    ) -> PluginFailure:
        """``where`` (``rule:<name>`` or ``source:<name>``) raised ``exc``; written or folded.

        ``owners`` maps the rule's or source's name to the plugin that registered it.
        """
        name = where.split(":", 1)[-1]
        failure = failure_of(owners.get(name) or PluginInfo(name, "unknown", "0"), where, exc)
        key = (failure.plugin, where)
        with self._lock:
            self.failures += 1
            now = self._clock()
            fold = self._folds.get(key)
            if fold is not None and fold.error_type == failure.error_type and not self._closed:
                ts = _TIMESTAMPS.format(self._wall_ns())
                fold.repeats += 1
                fold.last = failure
                fold.first_ts = fold.first_ts or ts
                fold.last_ts = ts
                if now - fold.began >= self.interval:
                    self._write_fold(fold, now)
                return failure
            if fold is not None:
                # Another error type: what the old one folded first, then the new one at once.
                self._write_fold(fold, now)
            self._write(failure, {})
            if not self._closed:
                self._folds[key] = _Fold(failure.error_type, now)
            return failure

    def recovered(self, plugin: str, where: str) -> None:
        """``where`` of ``plugin`` ran without raising: its fold, if any, is written and ends."""
        with self._lock:
            fold = self._folds.pop((plugin, where), None)
            if fold is not None:
                self._write_fold(fold, self._clock())

    def tick(self) -> None:
        """Write every fold older than :attr:`interval` (a hook that stopped being called)."""
        with self._lock:
            now = self._clock()
            for fold in self._folds.values():
                if fold.repeats and now - fold.began >= self.interval:
                    self._write_fold(fold, now)

    def close(self) -> None:
        """Write every pending fold; later failures are written at once. Safe twice."""
        with self._lock:
            self._closed = True
            folds, self._folds = self._folds, {}
            now = self._clock()
            for fold in folds.values():
                self._write_fold(fold, now)

    @property
    def pending(self) -> int:
        """Failures counted and not written yet."""
        with self._lock:
            return sum(fold.repeats for fold in self._folds.values())

    def _write_fold(self, fold: _Fold, now: float) -> None:
        fold.began = now
        if not fold.repeats or fold.last is None:
            return
        extra = {
            "suppressed": fold.repeats - 1,
            "first_ts": fold.first_ts,
            "last_ts": fold.last_ts,
        }
        last = fold.last
        fold.repeats, fold.last, fold.first_ts, fold.last_ts = 0, None, "", ""
        self._write(last, extra)

    def _write(self, failure: PluginFailure, extra: dict[str, Any]) -> None:
        # The record first: a stderr that fails must not cost the log its count.
        record_failures(self.audit, [failure], extra)
        self.records += 1
        line = failure_line(failure)
        if extra:
            times = 1 + extra["suppressed"]
            line = (
                f"{line[:-1]} ({times} more time{'s' if times > 1 else ''}, "
                f"{extra['first_ts']} to {extra['last_ts']})\n"
            )
        with contextlib.suppress(OSError, ValueError):  # a closed stderr never raises into a cycle
            self.stderr.write(line)
