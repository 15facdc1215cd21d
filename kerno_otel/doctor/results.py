"""What one doctor cycle measured and produced: its sources' signals merged into one window
(``merge``), its findings, deliveries and analysis (``CycleResult``)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, get_args

from kerno_otel.findings import Analysis, Finding, FindingSeverity, Signals

#: Severities that go to sinks (and into ``finding.emit``).
ALERTING: Final = frozenset({"WARNING", "CRITICAL"})


def merge(parts: Sequence[Signals], window_s: float, names: Sequence[str] | None = None) -> Signals:
    """Several sources' signals as one: a value any source measured is not absent.

    ``names`` are the sources' names, in the order of ``parts``; the merged
    window's ``sources`` says which one measured each value (the last one, when
    two did).
    """
    values: dict[str, float] = {}
    absent: set[str] = set()
    context: dict[str, Any] = {}
    origin: dict[str, str] = {}
    for i, part in enumerate(parts):
        values.update(part.values)
        absent |= part.absent
        context.update(part.context)
        if names is not None and i < len(names):
            origin.update(dict.fromkeys(part.values, names[i]))
        else:
            origin.update(part.sources)
    return Signals(window_s, values, frozenset(absent - set(values)), context, origin)


@dataclass(frozen=True)
class Delivery:
    """One finding sent to one sink, as its ``finding.emit`` record says."""

    rule: str
    severity: str
    sink: str
    payload_hash: str
    delivered: bool
    error: str | None = None


@dataclass
class CycleResult:
    """What one cycle measured, found, sent and (maybe) made of it."""

    cycle_id: str
    window_s: float
    signals: Signals
    #: Findings as rules produced them (raw evidence: keep in-process).
    findings: list[Finding]
    #: The same findings redacted: what sinks, stdout and the analyzer's readers see.
    redacted: list[Finding]
    deliveries: list[Delivery] = field(default_factory=list)
    analysis: Analysis | None = None
    #: Sources, sinks or the analyzer that failed (one line each; already redacted).
    notes: list[str] = field(default_factory=list)

    @property
    def not_measured(self) -> list[str]:
        """Signals no source measured: what sources said, plus what rules found missing."""
        names = set(self.signals.absent)
        for finding in self.findings:
            names.update(str(n) for n in finding.evidence.get("absent", ()) or ())
        return sorted(names)

    @property
    def alerting(self) -> bool:
        """Whether any finding is WARNING or CRITICAL."""
        return any(f.severity in ALERTING for f in self.findings)

    def to_json(self) -> dict[str, Any]:
        """The cycle as ``kerno-otel doctor -o json`` prints it: redacted findings only."""
        analysis = self.analysis
        return {
            "cycle_id": self.cycle_id,
            "window_s": round(self.window_s, 3),
            "findings": [
                {"rule": f.rule, "severity": f.severity, "title": f.title, "evidence": f.evidence}
                for f in self.redacted
            ],
            "deliveries": [
                {
                    "rule": d.rule,
                    "severity": d.severity,
                    "sink": d.sink,
                    "payload_hash": d.payload_hash,
                    "delivered": d.delivered,
                    **({"error": d.error} if d.error else {}),
                }
                for d in self.deliveries
            ],
            "absent": self.not_measured,
            "analysis": None
            if analysis is None
            else {
                "text": analysis.text,
                "provider": analysis.provider,
                "model": analysis.model,
                "cache": analysis.cache,
                "fallback": analysis.fallback,
            },
        }


_SEVERITIES: Final = frozenset(get_args(FindingSeverity))


def findings_of(returned: Any) -> list[Finding]:
    """What a rule returned, if it is findings; TypeError (the rule's failure) if not.

    A rule returning a string or a list of anything else used to crash the whole cycle
    (and ``kerno-otel doctor``) where its findings were read, far from the rule.
    """
    if isinstance(returned, (str, bytes, Mapping)):
        raise TypeError(f"returned {type(returned).__name__}, not a list of Finding")
    found = list(returned)
    for finding in found:
        if not isinstance(finding, Finding):
            raise TypeError(f"returned a {type(finding).__name__}, not a Finding")
        if finding.severity not in _SEVERITIES:
            raise TypeError(f"returned a Finding with severity {finding.severity!r}")
        if not (
            isinstance(finding.rule, str)
            and isinstance(finding.title, str)
            and isinstance(finding.evidence, Mapping)
        ):
            raise TypeError("returned a Finding whose rule, title or evidence has the wrong type")
    return found
