"""The doctor sources over the loaded programs: one per program, named ``bpf.<program>``."""

from __future__ import annotations

from typing import Any

from kerno_otel import Config
from kerno_otel.findings import Signals
from kerno_otel_plugins.bpf._program import BccProgram


def why_not_loaded(program: BccProgram, config: Config) -> str:
    """Why ``program`` is not loaded in this process, in a few words."""
    section = config.section("bpf")
    if not section.get("enabled", True):
        return "BPF is off (bpf.enabled is false)"
    if program.name not in (section.get("programs") or ()):
        return "not selected in bpf.programs"
    if program.error is not None:
        return f"not loaded: {program.error}"
    return "not loaded in this process"


class BPFSource:
    """Reads one program's maps at the start and end of a window."""

    def __init__(self, program: BccProgram, config: Config) -> None:
        self.program = program
        self.config = config
        self.label = f"bpf.{program.name}"

    def _off(self, window_s: float, reason: str) -> Signals:
        why = {f"why.{name}": f"{self.label}: {reason}" for name in self.program.signals}
        return Signals(window_s, {}, frozenset(self.program.signals), why)

    def begin(self) -> dict[str, Any] | None:
        if not self.program.loaded:
            return None
        return self.program.snapshot()

    def end(self, begun: dict[str, Any] | None, window_s: float) -> Signals:
        if begun is None or not self.program.loaded:
            return self._off(window_s, why_not_loaded(self.program, self.config))
        last = self.program.snapshot()
        window = self.program.window(begun, last, window_s)
        absent = frozenset(n for n in self.program.signals if n not in window.values)
        context: dict[str, Any] = dict(window.context)
        for name in absent:
            reason = window.why_absent.get(name, "not measured in the window")
            context[f"why.{name}"] = f"{self.label}: {reason}"
        values = dict(window.values)
        # What the program had to drop in the window is a signal too, never silence.
        values[f"{self.label}.lost"] = float(max(last.get("lost", 0) - begun.get("lost", 0), 0))
        return Signals(window_s, values, absent, context)
