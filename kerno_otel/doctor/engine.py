"""The doctor engine: one cycle = sample sources over a window, run rules, send findings, audit.

Sources, rules and sinks are plugins (``register_sources``, ``register_doctor_rules``,
``register_sinks``); their interfaces are in :mod:`kerno_otel.contract`. What the
engine produces and the analyzer reads is fixed in :mod:`kerno_otel.findings`.

Every WARNING/CRITICAL finding sent to a sink becomes one ``finding.emit``
record whose ``payload_hash`` is the SHA-256 of the exact bytes the sink was
given: the engine asks the sink to render the payload once, hashes those
bytes and hands the same bytes to the sink to deliver. Findings are redacted
before any sink sees them. Nothing here raises into the host: a failing
source, rule, sink or analyzer becomes a note, an INFO finding or an
undelivered record.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Final

from kerno_otel.config import ConfigError, parse_duration
from kerno_otel.contract import Rule, RuleInput, Sink, SinkFactory, Source, SourceFactory
from kerno_otel.findings import Analysis, Analyzer, Finding, Signals

if TYPE_CHECKING:
    from kerno_otel.audit.log import AuditLog
    from kerno_otel.config import Config
    from kerno_otel.records.redact import Redactor

#: ``doctor.duration`` bounds, in seconds (issue 4: 1s-5m).
MIN_DURATION: Final = 1.0
MAX_DURATION: Final = 300.0
#: Severities that go to sinks (and into ``finding.emit``).
ALERTING: Final = frozenset({"WARNING", "CRITICAL"})


# --- settings ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Settings:
    """The ``doctor`` section, checked: seconds, sink names, thresholds."""

    duration: float = 30.0
    interval: float = 60.0
    sinks: tuple[str, ...] = ("log",)
    thresholds: Mapping[str, float] = field(default_factory=dict)


def settings(config: Config, duration: str | float | None = None) -> Settings:
    """The doctor settings of ``config``; ``duration`` overrides ``doctor.duration``.

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
    thresholds = {k: float(v) for k, v in (section.get("thresholds") or {}).items()}
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


# --- helpers -----------------------------------------------------------------------------------


def merge(
    parts: Sequence[Signals], window_s: float, names: Sequence[str] | None = None
) -> Signals:
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


def redact_finding(redactor: Redactor, finding: Finding) -> Finding:
    """The finding with its title and evidence scrubbed by the audit log's redactor.

    Evidence the redactor cannot walk (nested too deep) is dropped, not sent raw.
    """
    title, _ = redactor.redact_text(finding.title)
    try:
        evidence = redactor.redact_details("doctor.finding", dict(finding.evidence))
    except ValueError:
        evidence = {"evidence": "dropped: nested too deep to redact"}
    return replace(finding, title=title, evidence=evidence)


def _error_text(exc: BaseException) -> str:
    text = str(exc).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__}: {text}"[:300] if text else type(exc).__name__


# --- the engine --------------------------------------------------------------------------------


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


class Doctor:
    """Runs cycles: sources over a window, rules, sinks (audited), then the analyzer."""

    def __init__(
        self,
        audit: AuditLog,
        settings: Settings,
        *,
        sources: Mapping[str, Source],
        rules: Mapping[str, Rule],
        sinks: Mapping[str, Sink],
        analyzer: Analyzer | Callable[[], Analyzer | None] | None = None,
        ids: CycleIds = CYCLE_IDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.audit = audit
        self.settings = settings
        self.sources = dict(sources)
        self.rules = dict(rules)
        self.sinks = dict(sinks)
        self.analyzer = analyzer
        self._ids = ids
        self._clock = clock

    def run_cycle(self, stop: threading.Event | None = None) -> CycleResult | None:
        """One cycle; None when ``stop`` was set during the window (nothing is sent)."""
        cycle_id = self._ids.next()
        notes: list[str] = []
        begun: dict[str, Any] = {}
        started = self._clock()
        for name, source in self.sources.items():
            try:
                begun[name] = source.begin()
            except Exception as exc:
                notes.append(f"source {name}: {_error_text(exc)}")
        if (stop or threading.Event()).wait(self.settings.duration):
            return None
        window = max(self._clock() - started, 1e-9)
        parts: list[Signals] = []
        measured_by: list[str] = []
        for name, state in begun.items():
            try:
                parts.append(self.sources[name].end(state, window))
                measured_by.append(name)
            except Exception as exc:
                notes.append(f"source {name}: {_error_text(exc)}")
        signals = merge(parts, window, measured_by)
        findings = self.evaluate(signals)
        redacted = [redact_finding(self.audit.redactor, f) for f in findings]
        result = CycleResult(cycle_id, window, signals, findings, redacted, notes=notes)
        self._send(result)
        result.analysis = self._analyze(result)
        result.notes = [self.audit.redactor.redact_text(n)[0] for n in result.notes]
        return result

    def evaluate(self, signals: Signals) -> list[Finding]:
        """Every rule over ``signals`` (``runs_last`` rules after the others)."""
        ordered = sorted(
            self.rules.items(), key=lambda item: bool(getattr(item[1], "runs_last", 0))
        )
        findings: list[Finding] = []
        for name, rule in ordered:
            given = RuleInput(signals, self.settings.thresholds, tuple(findings))
            try:
                findings.extend(rule(given))
            except Exception as exc:
                findings.append(
                    Finding(name, "INFO", f"rule failed: {type(exc).__name__}", {"rule": name})
                )
        return findings

    def _send(self, result: CycleResult) -> None:
        for finding in result.redacted:
            if finding.severity not in ALERTING:
                continue
            for name, sink in self.sinks.items():
                delivery = self._deliver(result.cycle_id, finding, name, sink)
                result.deliveries.append(delivery)
                details: dict[str, Any] = {
                    "rule": delivery.rule,
                    "severity": delivery.severity,
                    "sink": delivery.sink,
                    "payload_hash": delivery.payload_hash,
                    "cycle_id": result.cycle_id,
                    "delivered": delivery.delivered,
                }
                if delivery.error is not None:
                    details["error"] = delivery.error
                self.audit.emit(
                    "finding.emit",
                    details=details,
                    outcome="success" if delivery.delivered else "failure",
                )

    @staticmethod
    def _deliver(cycle_id: str, finding: Finding, name: str, sink: Sink) -> Delivery:
        try:
            payload = sink.render(finding, cycle_id)
        except Exception as exc:
            # Nothing was sent: the hash of no bytes says so.
            empty = "sha256:" + hashlib.sha256(b"").hexdigest()
            return Delivery(finding.rule, finding.severity, name, empty, False, _error_text(exc))
        digest = "sha256:" + hashlib.sha256(payload).hexdigest()
        try:
            sink.deliver(payload)
        except Exception as exc:
            return Delivery(finding.rule, finding.severity, name, digest, False, _error_text(exc))
        return Delivery(finding.rule, finding.severity, name, digest, True)

    def _analyze(self, result: CycleResult) -> Analysis | None:
        analyzer = self.analyzer
        if analyzer is not None and not hasattr(analyzer, "analyze"):
            analyzer = analyzer()
        if analyzer is None:
            return None
        try:
            # The analyzer applies its own privacy_mode to raw findings and signals.
            return analyzer.analyze(result.cycle_id, result.findings, result.signals)
        except Exception as exc:
            result.notes.append(f"analyzer: {_error_text(exc)}")
            return None


def build_doctor(
    audit: AuditLog,
    config: Config,
    *,
    sources: Mapping[str, SourceFactory],
    rules: Mapping[str, Rule],
    sinks: Mapping[str, SinkFactory],
    analyzer: Analyzer | Callable[[], Analyzer | None] | None = None,
    duration: str | float | None = None,
) -> Doctor:
    """A :class:`Doctor` from registered factories and the config.

    Raises ConfigError for a bad ``doctor`` section, an unknown sink name in
    ``doctor.sinks``, or a sink whose own section is unusable.
    """
    chosen = settings(config, duration)
    built_sources: dict[str, Source] = {}
    for name, factory in sources.items():
        source = factory(config)
        if source is not None:
            built_sources[name] = source
    built_sinks: dict[str, Sink] = {}
    for name in chosen.sinks:
        if name not in sinks:
            known = ", ".join(sorted(sinks)) or "none loaded"
            raise ConfigError(f"doctor.sinks: unknown sink {name!r} (known: {known})")
        built_sinks[name] = sinks[name](config)
    return Doctor(
        audit, chosen, sources=built_sources, rules=rules, sinks=built_sinks, analyzer=analyzer
    )
