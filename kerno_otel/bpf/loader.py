"""The BPF loader: loads what ``bpf.programs`` selects, one ``bpf.load`` record per attempt.

Loading a program into the kernel is the most privileged thing the daemon does,
so the core does it for every plugin, the same way: the plugin's program
(:class:`~kerno_otel.contract.BPFProgram`) compiles and attaches itself; the
loader times it, writes the ``bpf.load`` record (its error scrubbed by the
audit pipeline like any free text), says on stderr, once, why a program did
not load, and keeps going with the next one. A program that raises anything
at all is a failed load, never a failed daemon.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TextIO

from opentelemetry.trace import StatusCode

from kerno_otel.contract import BPFProgram, BPFStats

if TYPE_CHECKING:
    from kerno_otel.audit.log import AuditLog
    from kerno_otel.config import Config
    from kerno_otel.telemetry import Telemetry

#: How much of a load error is kept (one line; compilers say a lot).
ERROR_CHARS = 300


@dataclass
class LoadResult:
    """One load attempt, as its ``bpf.load`` record says, plus how long it took."""

    name: str
    tracepoints: tuple[str, ...]
    success: bool
    load_s: float
    error: str | None = None


def error_text(exc: BaseException) -> str:
    """One short line for a failed load: the message's first line, or the exception's type."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return (lines[0] if lines else type(exc).__name__)[:ERROR_CHARS]


def _constant(value: int) -> Callable[[], int]:
    return lambda: value


def selected(config: Config, programs: Mapping[str, BPFProgram]) -> tuple[list[str], list[str]]:
    """(the registered programs ``bpf.programs`` selects, the names it lists that none is).

    Nothing is selected when ``bpf.enabled`` is false.
    """
    section = config.section("bpf")
    if not section.get("enabled", True):
        return [], []
    wanted = [str(name) for name in section.get("programs") or ()]
    return [n for n in wanted if n in programs], [n for n in wanted if n not in programs]


class BPFLoader:
    """Loads programs and closes them; every attempt becomes a ``bpf.load`` record."""

    def __init__(self, audit: AuditLog, stderr: TextIO, telemetry: Telemetry | None = None) -> None:
        self.audit = audit
        self.stderr = stderr
        #: The daemon's telemetry: each load is a ``kerno.bpf.load`` span (its ``bpf.load``
        #: record carries the span's ids) and each loaded program's ``stats().lost`` is
        #: exported as ``kerno.bpf.lost_events``. None: no spans, no metrics.
        self.telemetry = telemetry
        #: The programs that loaded, by name, in load order.
        self.loaded: dict[str, BPFProgram] = {}
        self.results: list[LoadResult] = []

    def _say(self, text: str) -> None:
        clean, _ = self.audit.redactor.redact_text(text)
        self.stderr.write(f"kerno-otel: bpf: {clean}\n")
        self.stderr.flush()

    def load_selected(self, config: Config, programs: Mapping[str, BPFProgram]) -> list[LoadResult]:
        """Load what the ``bpf`` section selects; say on stderr what it leaves off and why."""
        if not programs:
            return []  # no BPF plugin loaded (an allow-list left it out): nothing to say
        names, unknown = selected(config, programs)
        if not config.section("bpf").get("enabled", True):
            self._say("off (bpf.enabled is false): the doctor uses procfs only")
            return []
        if unknown:
            self._say(
                f"bpf.programs: no plugin registers {', '.join(map(repr, unknown))} "
                f"(known: {', '.join(sorted(programs))})"
            )
        return self.load({n: programs[n] for n in names})

    def load(self, programs: Mapping[str, BPFProgram]) -> list[LoadResult]:
        """Load each program in turn; a failure is recorded and the next one is tried."""
        results = []
        for name, program in programs.items():
            results.append(self._load_one(name, program))
        self.results.extend(results)
        return results

    def _load_one(self, name: str, program: BPFProgram) -> LoadResult:
        if self.telemetry is None:
            return self._attempt(name, program)
        with self.telemetry.tracer.start_as_current_span(
            "kerno.bpf.load", attributes={"kerno.bpf.program": name}
        ) as span:
            result = self._attempt(name, program)
            span.set_attribute("kerno.bpf.success", result.success)
            if not result.success:
                span.set_status(StatusCode.ERROR, "load failed")
        if result.success:
            self.telemetry.observe_bpf_lost(name, lambda: program.stats().lost)
        return result

    def _attempt(self, name: str, program: BPFProgram) -> LoadResult:
        try:
            tracepoints = tuple(str(t) for t in program.tracepoints)
        except Exception:
            tracepoints = ()
        started = time.monotonic()
        error: str | None = None
        try:
            program.load()
        except Exception as exc:  # anything a plugin raises is a failed load
            error = error_text(exc)
        took = time.monotonic() - started
        details: dict[str, Any] = {"program": name, "attach": list(tracepoints)}
        details["success"] = error is None
        if error is not None:
            details["error"] = error
        self.audit.emit(
            "bpf.load",
            details=details,
            outcome="success" if error is None else "failure",
            severity="INFO" if error is None else "WARN",
        )
        if error is None:
            self.loaded[name] = program
        else:
            self._say(f"{name} not loaded: {error}; its signals come from procfs where it has them")
        return LoadResult(name, tracepoints, error is None, took, error)

    def stats(self) -> dict[str, BPFStats | None]:
        """Each loaded program's counts so far (None for one whose ``stats`` raised)."""
        out: dict[str, BPFStats | None] = {}
        for name, program in self.loaded.items():
            try:
                out[name] = program.stats()
            except Exception:
                out[name] = None
        return out

    def close(self) -> None:
        """Detach everything loaded; safe twice. A program whose ``close`` raises is skipped."""
        loaded, self.loaded = self.loaded, {}
        for name, program in loaded.items():
            if self.telemetry is not None:
                # The last export comes after the close (at shutdown), when a program
                # counts nothing: it reports the count the program had when it closed.
                try:
                    last = int(program.stats().lost)
                except Exception:
                    pass  # as in the callback: a program whose stats raise is not reported
                else:
                    self.telemetry.observe_bpf_lost(name, _constant(last))
            try:
                program.close()
            except Exception as exc:
                self._say(f"close failed: {error_text(exc)}")
