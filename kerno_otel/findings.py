"""What the doctor produces and the analyzer reads: findings, signal windows, analyses.

The contract between the doctor engine (rules over signals, findings to sinks)
and the analyzer (LLM providers); both are plugins and meet only here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

FindingSeverity = Literal["INFO", "WARNING", "CRITICAL"]


@dataclass(frozen=True)
class Signals:
    """One window of signals, as the sources measured it.

    ``values`` are numbers by dotted name (``mem.used_pct``, ``tcp.retransmit_pct``,
    ``fd.growth_per_sec``); ``absent`` names what no source could measure (a rule
    whose signals are absent says so instead of guessing); ``context`` holds raw
    text the rules may quote as evidence (process names, paths, addresses). Raw
    context never leaves the process unredacted. A source that knows why it could not
    measure a signal says so under ``why.<signal>`` (``why.syscall.p99_ns``:
    ``"bpf.syscall_latency: not root"``), and rules quote it.
    """

    window_s: float
    values: Mapping[str, float] = field(default_factory=dict)
    absent: frozenset[str] = frozenset()
    context: Mapping[str, Any] = field(default_factory=dict)
    #: Which source measured each value (``syscall.p99_ns`` -> ``bpf.syscall_latency``),
    #: filled in by the doctor engine when it merges its sources' windows; rules name
    #: it in a finding's evidence.
    sources: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Finding:
    """One diagnosis: which rule, how bad, a title and the evidence behind it."""

    rule: str
    severity: FindingSeverity
    title: str
    evidence: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Analysis:
    """What the analyzer made of one cycle (the text never enters the audit log)."""

    text: str
    provider: str
    model: str
    cache: Literal["hit", "miss"]
    #: True when the template fallback wrote the text (no provider, provider failed,
    #: or rate-limited).
    fallback: bool


class Analyzer(Protocol):
    """Turns a cycle's findings into an explanation; records an ``ai.call`` per call."""

    def analyze(self, cycle_id: str, findings: Sequence[Finding], signals: Signals) -> Analysis: ...
