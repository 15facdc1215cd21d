"""The doctor plugin: kerno's rules, the ``log`` sink, and the daemon's cycle thread.

In the daemon a thread runs a cycle every ``doctor.interval`` (each cycle
samples for ``doctor.duration``), rebuilding the doctor from
``context.config`` each time so a reload of ``doctor.*`` applies at the next
cycle. One :class:`~kerno_otel.FailureFold` lives across the cycles, so a rule
or source factory that raises every cycle is one ``plugin.error`` at once and
its repeats folded, written when it recovers, every five minutes while it keeps
failing and when the thread stops (at ``daemon_shutdown``, or ``daemon_panic``). The
sources, rules and sinks are the ones plugins registered (``context.sources``,
``context.rules``, ``context.sinks``); the analyzer, when a plugin made one, is
``context.analyzer``, read at every cycle. A cycle that fails is one line on stderr; the
thread goes on.
"""

from __future__ import annotations

import contextlib
import sys
import threading
import time
from collections.abc import Callable
from typing import Final, TextIO

from kerno_otel import Config, FailureFold, Rule, SinkFactory, build_doctor, hookimpl
from kerno_otel.findings import Analyzer, Finding
from kerno_otel.hookspecs import DaemonContext
from kerno_otel_plugins._rules import all_rules

#: Stable plugin name (the entry point's name).
NAME: Final = "doctor"
#: Seconds daemon_shutdown waits for a cycle in flight to notice the stop.
STOP_S: Final = 10.0
#: Seconds before the next try when a cycle could not start (the default doctor.interval).
RETRY_S: Final = 60.0


class LogSink:
    """One line per finding on stderr: ``kerno-otel: doctor: SEVERITY rule cycle: title (…)``."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream

    def render(self, finding: Finding, cycle_id: str) -> bytes:
        evidence = ", ".join(f"{k}={v}" for k, v in finding.evidence.items())
        line = f"kerno-otel: doctor: {finding.severity} {finding.rule} {cycle_id}: {finding.title}"
        return (line + (f" ({evidence})" if evidence else "") + "\n").encode()

    def deliver(self, payload: bytes) -> None:
        stream = self.stream or sys.stderr
        stream.write(payload.decode())
        stream.flush()


def _log_factory(config: Config) -> LogSink:
    return LogSink()


@hookimpl
def register_doctor_rules(register: Callable[[str, Rule], None]) -> None:
    for name, rule in all_rules():
        register(name, rule)


@hookimpl
def register_sinks(register: Callable[[str, SinkFactory], None]) -> None:
    register("log", _log_factory)


class CycleThread:
    """Runs doctor cycles until stopped."""

    def __init__(self, context: DaemonContext, stderr: TextIO) -> None:
        self.context = context
        self.stderr = stderr
        self.stop_event = threading.Event()
        self.cycles = 0
        #: A plugin's rule or source failing cycle after cycle: written once, repeats folded.
        self.failures = FailureFold(context.audit, stderr)
        self._thread = threading.Thread(target=self._run, name="kerno-doctor", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = STOP_S) -> None:
        """Stop the cycles, then write the failures still folded (none is lost)."""
        self.stop_event.set()
        if self._thread.is_alive():
            self._thread.join(timeout)
        self.failures.close()

    def _analyzer(self) -> Analyzer | None:
        return self.context.analyzer

    def _cycle_failed(self, exc: Exception) -> None:
        """The one stderr line for a cycle that raised: scrubbed, and never raising itself.

        The exception may be a plugin's (a sink factory's), whose text may quote a
        secret and whose ``str()`` may raise; an exception escaping this thread would be
        the daemon's panic.
        """
        try:
            text = str(exc).splitlines()[0][:300] if str(exc).strip() else ""
        except Exception:
            text = "<str() failed>"
        line = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
        try:
            line = self.context.audit.redactor.redact_text(line)[0]
        except Exception:
            line = "(unprintable)"
        with contextlib.suppress(Exception):
            self.stderr.write(f"kerno-otel: doctor: cycle failed: {line}\n")

    def _run(self) -> None:
        context = self.context
        while not self.stop_event.is_set():
            started = time.monotonic()
            interval = RETRY_S
            try:
                doctor = build_doctor(
                    context.audit,
                    context.config,
                    sources=context.sources,
                    rules=context.rules,
                    sinks=context.sinks,
                    analyzer=self._analyzer,
                    telemetry=context.telemetry,
                    rule_plugins=context.rule_plugins,
                    source_plugins=context.source_plugins,
                    stderr=self.stderr,
                    failures=self.failures,
                )
                interval = doctor.settings.interval
                result = doctor.run_cycle(self.stop_event)
                if result is not None:
                    self.cycles += 1
                    for note in result.notes:
                        self.stderr.write(f"kerno-otel: doctor {result.cycle_id}: {note}\n")
            except Exception as exc:  # a cycle never raises into the daemon
                self._cycle_failed(exc)
            self.stop_event.wait(max(interval - (time.monotonic() - started), 0.0))


@hookimpl
def daemon_startup(context: DaemonContext) -> None:
    thread = CycleThread(context, sys.stderr)
    context.state[NAME] = thread
    thread.start()


@hookimpl
def daemon_shutdown(context: DaemonContext, reason: str, uptime_s: float) -> None:
    thread = context.state.pop(NAME, None)
    if isinstance(thread, CycleThread):
        thread.stop()


@hookimpl
def daemon_panic(context: DaemonContext, exception_type: str, panic_digest: str) -> None:
    # No daemon_shutdown follows a panic: the failures still folded are written now,
    # while the log is open, or their count would be lost. No wait for the cycle.
    thread = context.state.pop(NAME, None)
    if isinstance(thread, CycleThread):
        thread.stop_event.set()
        thread.failures.close()
