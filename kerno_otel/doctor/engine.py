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

Traced (docs/telemetry.md): a ``kerno.doctor.cycle`` span is the root of each
cycle, with a child per source sample, rule run and sink delivery; the
analyzer's LLM call is a child too, made by the analyzer. ``finding.emit`` is
emitted inside its delivery's span, so the record carries that span's ids.
"""

from __future__ import annotations

import hashlib
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import TYPE_CHECKING, Any, TextIO

from opentelemetry.trace import Span, StatusCode

from kerno_otel.config import ConfigError
from kerno_otel.contract import (
    PluginInfo,
    Rule,
    RuleInput,
    Sink,
    SinkFactory,
    Source,
    SourceFactory,
)
from kerno_otel.daemon.failure_fold import FailureFold
from kerno_otel.daemon.failures import exception_line
from kerno_otel.doctor.results import ALERTING, CycleResult, Delivery, findings_of, merge
from kerno_otel.doctor.settings import CYCLE_IDS, CycleIds, Settings, settings
from kerno_otel.doctor.thresholds import declared as declared_thresholds
from kerno_otel.findings import Analysis, Analyzer, Finding, Signals
from kerno_otel.telemetry import Telemetry

if TYPE_CHECKING:
    from kerno_otel.audit.log import AuditLog
    from kerno_otel.config import Config
    from kerno_otel.records.redact import Redactor

# CycleResult and Delivery (results.py), Settings and CycleIds (settings.py) are still
# this module's to import.
__all__ = [
    "ALERTING",
    "CYCLE_IDS",
    "CycleIds",
    "CycleResult",
    "Delivery",
    "Doctor",
    "Settings",
    "build_doctor",
    "merge",
    "redact_finding",
    "settings",
]


# --- helpers -----------------------------------------------------------------------------------


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
    # Never raises: a plugin's exception whose str() raises is still a note, not a lost cycle.
    text = exception_line(exc, 300)
    return f"{type(exc).__name__}: {text}"[:300] if text else type(exc).__name__


# --- the engine --------------------------------------------------------------------------------


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
        telemetry: Telemetry | None = None,
        rule_plugins: Mapping[str, PluginInfo] | None = None,
        stderr: TextIO | None = None,
        failures: FailureFold | None = None,
    ) -> None:
        self.audit = audit
        self.telemetry = telemetry if telemetry is not None else Telemetry.off()
        #: The plugin that registered each rule, named in its ``plugin.error`` when it raises.
        self.rule_plugins = dict(rule_plugins or {})
        #: Where a raising rule's ``plugin.error`` goes: written at once, its repeats folded.
        #: Pass the same one to every cycle's Doctor; :meth:`close` writes what it holds.
        self.failures = (
            failures
            if failures is not None
            else FailureFold(audit, sys.stderr if stderr is None else stderr)
        )
        self.settings = settings
        self.sources = dict(sources)
        self.rules = dict(rules)
        self.sinks = dict(sinks)
        self.analyzer = analyzer
        self._ids = ids
        self._clock = clock

    def close(self) -> None:
        """Write the ``plugin.error`` repeats still folded (:meth:`FailureFold.close`)."""
        self.failures.close()

    def run_cycle(self, stop: threading.Event | None = None) -> CycleResult | None:
        """One cycle; None when ``stop`` was set during the window (nothing is sent)."""
        cycle_id = self._ids.next()
        telemetry = self.telemetry
        started = time.perf_counter()
        with telemetry.tracer.start_as_current_span(
            "kerno.doctor.cycle", attributes={"kerno.doctor.cycle_id": cycle_id}
        ) as span:
            result = self._cycle(cycle_id, stop)
            outcome = "stopped" if result is None else "completed"
            span.set_attribute("kerno.doctor.outcome", outcome)
            if result is not None:
                span.set_attribute("kerno.doctor.findings", len(result.findings))
        telemetry.instruments.cycle_duration.record(
            time.perf_counter() - started, {"kerno.doctor.outcome": outcome}
        )
        return result

    def _cycle(self, cycle_id: str, stop: threading.Event | None) -> CycleResult | None:
        tracer = self.telemetry.tracer
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
            with tracer.start_as_current_span(
                "kerno.doctor.source", attributes={"kerno.doctor.source": name}
            ) as span:
                try:
                    parts.append(self.sources[name].end(state, window))
                    measured_by.append(name)
                except Exception as exc:
                    notes.append(f"source {name}: {_error_text(exc)}")
                    span.set_status(StatusCode.ERROR, type(exc).__name__)
        signals = merge(parts, window, measured_by)
        findings = self.evaluate(signals)
        self.failures.tick()
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
        tracer = self.telemetry.tracer
        counter = self.telemetry.instruments.findings
        for name, rule in ordered:
            given = RuleInput(signals, self.settings.thresholds, tuple(findings))
            before = len(findings)
            with tracer.start_as_current_span(
                "kerno.doctor.rule", attributes={"kerno.doctor.rule": name}
            ) as span:
                try:
                    findings.extend(findings_of(rule(given)))
                except Exception as exc:
                    findings.append(
                        Finding(
                            name,
                            "INFO",
                            f"rule failed: {type(exc).__name__}",
                            {"rule": name, "failed": type(exc).__name__},
                        )
                    )
                    span.set_status(StatusCode.ERROR, type(exc).__name__)
                    self._rule_failed(name, exc)
                else:
                    self._rule_ran(name)
                span.set_attribute("kerno.doctor.findings", len(findings) - before)
            for finding in findings[before:]:
                counter.add(
                    1, {"kerno.doctor.rule": name, "kerno.finding.severity": finding.severity}
                )
        return findings

    def _rule_failed(self, name: str, exc: Exception) -> None:
        """A rule raised (issue 13): a ``plugin.error`` naming its plugin, and one stderr line.

        Identical repeats in later cycles are folded (:mod:`kerno_otel.daemon.failure_fold`).
        """
        self.failures.failed(self.rule_plugins, f"rule:{name}", exc)

    def _rule_ran(self, name: str) -> None:
        owner = self.rule_plugins.get(name)
        self.failures.recovered(owner.name if owner is not None else name, f"rule:{name}")

    def _send(self, result: CycleResult) -> None:
        for finding in result.redacted:
            if finding.severity not in ALERTING:
                continue
            for name, sink in self.sinks.items():
                with self.telemetry.tracer.start_as_current_span(
                    "kerno.doctor.sink",
                    attributes={
                        "kerno.doctor.sink": name,
                        "kerno.doctor.rule": finding.rule,
                        "kerno.finding.severity": finding.severity,
                    },
                ) as span:
                    self._send_one(result, finding, name, sink, span)

    def _send_one(
        self, result: CycleResult, finding: Finding, name: str, sink: Sink, span: Span
    ) -> None:
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
        span.set_attribute("kerno.doctor.delivered", delivery.delivered)
        if not delivery.delivered:
            span.set_status(StatusCode.ERROR, "not delivered")
        self.telemetry.instruments.deliveries.add(
            1,
            {
                "kerno.doctor.sink": name,
                "kerno.doctor.outcome": "delivered" if delivery.delivered else "failed",
            },
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
    telemetry: Telemetry | None = None,
    rule_plugins: Mapping[str, PluginInfo] | None = None,
    stderr: TextIO | None = None,
    source_plugins: Mapping[str, PluginInfo] | None = None,
    failures: FailureFold | None = None,
) -> Doctor:
    """A :class:`Doctor` from registered factories and the config.

    ``telemetry`` (the daemon's, ``DaemonContext.telemetry``) traces the cycles; None:
    no-op. ``rule_plugins`` and ``source_plugins`` name the plugin behind each rule and
    source (``DaemonContext.rule_plugins``, ``.source_plugins``) for the ``plugin.error`` a
    raising rule or source factory becomes (the source is then left out of the cycle);
    its stderr line goes to ``stderr``. ``failures`` folds the repeats of those
    ``plugin.error`` records across cycles: hand the same :class:`FailureFold` to each
    cycle's doctor and close it when the cycles stop; None: a new one, closed by
    :meth:`Doctor.close`.
    Raises ConfigError for a bad ``doctor`` section (a threshold no kerno or loaded
    rule declares), an unknown sink name in ``doctor.sinks``, or a sink whose own
    section is unusable.
    """
    chosen = settings(config, duration, declared_thresholds(rules.values()))
    if failures is None:
        failures = FailureFold(audit, sys.stderr if stderr is None else stderr)
    owners = source_plugins or {}
    built_sources: dict[str, Source] = {}
    for name, factory in sources.items():
        try:
            source = factory(config)
            if source is not None and not (
                callable(getattr(source, "begin", None)) and callable(getattr(source, "end", None))
            ):
                raise TypeError(f"the factory returned {type(source).__name__}, not a Source")
        except Exception as exc:  # one plugin's source must not stop the diagnosis
            failures.failed(owners, f"source:{name}", exc)
            continue
        owner = owners.get(name)
        failures.recovered(owner.name if owner is not None else name, f"source:{name}")
        if source is not None:
            built_sources[name] = source
    built_sinks: dict[str, Sink] = {}
    for name in chosen.sinks:
        if name not in sinks:
            known = ", ".join(sorted(sinks)) or "none loaded"
            raise ConfigError(f"doctor.sinks: unknown sink {name!r} (known: {known})")
        built_sinks[name] = sinks[name](config)
    return Doctor(
        audit,
        chosen,
        sources=built_sources,
        rules=rules,
        sinks=built_sinks,
        analyzer=analyzer,
        telemetry=telemetry,
        rule_plugins=rule_plugins,
        stderr=stderr,
        failures=failures,
    )
