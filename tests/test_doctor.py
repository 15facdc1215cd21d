"""The doctor engine: settings, cycle ids, rules, sinks, the analyzer hook, the daemon's cycles."""

from __future__ import annotations

import hashlib
import io
import os
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from helpers import QUIET_THRESHOLDS, stream_records
from kerno_otel_plugins.doctor import LogSink

from kerno_otel import AuditConfig, AuditLog, ConfigError, PluginInfo, build_doctor, load_config
from kerno_otel.doctor.engine import CycleIds, Doctor, RuleInput, Settings, merge, settings
from kerno_otel.findings import Analysis, Finding, Signals
from kerno_otel.records.schema import SchemaSet
from kerno_otel.records.validate import RecordValidator

CYCLE_ID = r"^cycle-[0-9]{8}-[0-9]{6}(-[0-9]+)?$"


def config_with(tmp_path: Path, text: str) -> Any:
    path = tmp_path / "kerno.yaml"
    path.write_text(text)
    return load_config(path, env={})


# --- settings and ids --------------------------------------------------------------------------


def test_duration_defaults_and_bounds(tmp_path: Path) -> None:
    assert settings(load_config(None, env={})) == Settings(
        30.0, 60.0, ("log",), settings(load_config(None, env={})).thresholds
    )
    assert settings(load_config(None, env={})).thresholds["fd_growth_per_sec"] == 10.0
    assert settings(load_config(None, env={}), "2s").duration == 2.0
    with pytest.raises(ConfigError) as info:
        settings(config_with(tmp_path, "doctor:\n  duration: 10m\n"))
    assert str(info.value) == "doctor.duration: expected a duration from 1s to 5m, got '10m'"
    with pytest.raises(ConfigError) as info:
        settings(load_config(None, env={}), "500ms")
    assert str(info.value) == "--duration: expected a duration from 1s to 5m, got '500ms'"
    with pytest.raises(ConfigError) as info:
        settings(load_config(None, env={}), "soon")
    assert str(info.value) == "--duration: expected a duration like 30s, 5m or 24h"


def test_cycle_ids_are_unique_within_a_second() -> None:
    ids = CycleIds()
    now = datetime(2026, 11, 27, 18, 0, 0, 5, tzinfo=UTC)
    later = datetime(2026, 11, 27, 18, 0, 1, tzinfo=UTC)
    got = [ids.next(now), ids.next(now), ids.next(now), ids.next(later)]
    assert got == [
        "cycle-20261127-180000",
        "cycle-20261127-180000-1",
        "cycle-20261127-180000-2",
        "cycle-20261127-180001",
    ]
    live = [CycleIds().next()] + [ids.next() for _ in range(50)]
    assert len(set(live[1:])) == 50
    assert all(re.match(CYCLE_ID, i) for i in live)


def test_merge_measured_wins_over_absent() -> None:
    a = Signals(1.0, {"mem.used_pct": 50.0}, frozenset({"syscall.p99_ns"}), {"x": 1})
    b = Signals(1.0, {"syscall.p99_ns": 5.0}, frozenset({"mem.used_pct", "tcp.rtt_p99_ns"}))
    merged = merge([a, b], 1.0)
    assert merged.values == {"mem.used_pct": 50.0, "syscall.p99_ns": 5.0}
    assert merged.absent == frozenset({"tcp.rtt_p99_ns"})
    assert merged.context == {"x": 1}


# --- cycles ------------------------------------------------------------------------------------


class Fixed:
    def __init__(self, values: dict[str, float]) -> None:
        self.values = values

    def begin(self) -> int:
        return 1

    def end(self, begun: int, window_s: float) -> Signals:
        return Signals(window_s, self.values)


class Broken:
    def begin(self) -> None:
        raise OSError("cannot read /home/alice/.proc")

    def end(self, begun: None, window_s: float) -> Signals:
        raise AssertionError("never called")


def high_memory(given: RuleInput) -> list[Finding]:
    used = given.signals.values.get("mem.used_pct", 0.0)
    return [Finding("high_memory", "CRITICAL", f"memory {used}%")] if used > 90 else []


def crashing(given: RuleInput) -> list[Finding]:
    raise ZeroDivisionError("oops")


def summary(given: RuleInput) -> list[Finding]:
    return [Finding("summary", "INFO", f"{len(given.earlier)} earlier")]


summary.runs_last = True  # type: ignore[attr-defined]


class FakeAnalyzer:
    """Records what it was given and writes an ai.call, as the analyzer plugin does."""

    def __init__(self, log: AuditLog) -> None:
        self.log = log
        self.calls: list[tuple[str, list[str]]] = []

    def analyze(self, cycle_id: str, findings: Sequence[Finding], signals: Signals) -> Analysis:
        self.calls.append((cycle_id, [f.rule for f in findings]))
        self.log.emit(
            "ai.call",
            cycle_id=cycle_id,
            details={
                "provider": "template",
                "model": "template",
                "cache": "miss",
                "tokens": {"input": 0, "output": 0},
                "prompt_size": 0,
                "response_size": 0,
                "redactions": {},
                "duration_ms": 0.1,
                "privacy_mode": "summary",
            },
        )
        return Analysis("memory is high", "template", "template", "miss", True)


def test_a_cycle_end_to_end(tmp_path: Path) -> None:
    log_path = tmp_path / "kerno-audit.jsonl"
    stream = io.StringIO()
    with AuditLog(AuditConfig(file_path=str(log_path))) as log:
        analyzer = FakeAnalyzer(log)
        doctor = Doctor(
            log,
            Settings(duration=0.01),
            sources={"fixed": Fixed({"mem.used_pct": 97.0}), "broken": Broken()},
            rules={"summary": summary, "high_memory": high_memory, "crashing": crashing},
            sinks={"log": LogSink(stream)},
            analyzer=lambda: analyzer,
        )
        result = doctor.run_cycle()
    assert result is not None
    assert [(f.rule, f.severity, f.title) for f in result.findings] == [
        ("high_memory", "CRITICAL", "memory 97.0%"),
        ("crashing", "INFO", "rule failed: ZeroDivisionError"),
        ("summary", "INFO", "2 earlier"),
    ]
    assert result.notes == ["source broken: OSError: cannot read /home/[REDACTED:path]"]
    assert result.alerting
    assert stream.getvalue() == (
        f"kerno-otel: doctor: CRITICAL high_memory {result.cycle_id}: memory 97.0%\n"
    )
    assert analyzer.calls == [(result.cycle_id, ["high_memory", "crashing", "summary"])]
    assert result.analysis is not None and result.analysis.text == "memory is high"
    records = stream_records(log_path)
    validator = RecordValidator(SchemaSet.builtin())
    assert [validator.check(r) for r in records] == [None] * len(records)
    linked = [r for r in records if r["details"].get("cycle_id") == result.cycle_id]
    assert [r["type"] for r in linked] == ["finding.emit", "ai.call"]
    assert linked[0]["details"]["payload_hash"] == (
        "sha256:" + hashlib.sha256(stream.getvalue().encode()).hexdigest()
    )


def test_a_stopped_cycle_sends_nothing(tmp_path: Path) -> None:
    stop = threading.Event()
    stop.set()
    with AuditLog(AuditConfig(file_path=str(tmp_path / "a.jsonl"))) as log:
        doctor = Doctor(
            log,
            Settings(duration=5.0),
            sources={"fixed": Fixed({"mem.used_pct": 97.0})},
            rules={"high_memory": high_memory},
            sinks={"log": LogSink(io.StringIO())},
        )
        assert doctor.run_cycle(stop) is None
    assert [r["type"] for r in stream_records(tmp_path / "a.jsonl")] == ["audit.start"]


def test_a_crashing_rule_is_a_plugin_error_and_the_report_says_so(tmp_path: Path) -> None:
    # Issue 13, 4: a rule that raised used to be a quiet INFO finding, and
    # healthy_system still said "no problems found".
    from kerno_otel_plugins._rules import healthy_system

    log_path = tmp_path / "kerno-audit.jsonl"
    err = io.StringIO()
    with AuditLog(AuditConfig(file_path=str(log_path))) as log:
        doctor = Doctor(
            log,
            Settings(duration=0.01),
            sources={"fixed": Fixed({"mem.used_pct": 50.0})},
            rules={"crashing": crashing, "healthy_system": healthy_system},
            sinks={},
            rule_plugins={"crashing": PluginInfo("acme", "acme-kerno", "1.2")},
            stderr=err,
        )
        result = doctor.run_cycle()
    assert result is not None
    assert [(f.rule, f.title) for f in result.findings] == [
        ("crashing", "rule failed: ZeroDivisionError"),
        ("healthy_system", "1 rule(s) failed (crashing): not every check ran"),
    ]
    assert err.getvalue() == (
        "kerno-otel: plugin 'acme' (acme-kerno 1.2) failed in rule:crashing: "
        "ZeroDivisionError: oops\n"
    )
    errors = [r for r in stream_records(log_path) if r["type"] == "plugin.error"]
    assert [{k: v for k, v in r["details"].items() if k != "error_digest"} for r in errors] == [
        {
            "plugin": "acme",
            "distribution": "acme-kerno",
            "version": "1.2",
            "hook": "rule:crashing",
            "error_type": "ZeroDivisionError",
        }
    ]


def test_a_source_factory_that_raises_is_left_out_as_a_plugin_error(tmp_path: Path) -> None:
    def broken_factory(config: object) -> None:
        raise OSError("no such device")

    log_path = tmp_path / "kerno-audit.jsonl"
    err = io.StringIO()
    config = config_with(tmp_path, "doctor:\n  duration: 1s\n  sinks: []\n")
    with AuditLog(AuditConfig(file_path=str(log_path))) as log:
        doctor = build_doctor(
            log,
            config,
            sources={"broken": broken_factory, "fixed": lambda c: Fixed({"mem.used_pct": 97.0})},
            rules={"high_memory": high_memory},
            sinks={},
            source_plugins={"broken": PluginInfo("acme", "acme-kerno", "1.2")},
            stderr=err,
        )
        assert list(doctor.sources) == ["fixed"]
    assert err.getvalue() == (
        "kerno-otel: plugin 'acme' (acme-kerno 1.2) failed in source:broken: OSError: "
        "no such device\n"
    )
    errors = [r["details"] for r in stream_records(log_path) if r["type"] == "plugin.error"]
    assert [(e["plugin"], e["hook"], e["error_type"]) for e in errors] == [
        ("acme", "source:broken", "OSError")
    ]


def returns_text(given: RuleInput) -> Any:
    return "disk is fine"


def returns_junk(given: RuleInput) -> Any:
    return [Finding("x", "WARNING", "fine"), 42]


def returns_bad_severity(given: RuleInput) -> Any:
    return [Finding("x", "HUGE", "fine")]  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("rule", "why"),
    [
        (returns_text, "returned str, not a list of Finding"),
        (returns_junk, "returned a int, not a Finding"),
        (returns_bad_severity, "returned a Finding with severity 'HUGE'"),
    ],
)
def test_a_rule_returning_something_else_is_a_plugin_error(
    tmp_path: Path, rule: Any, why: str
) -> None:
    # A rule returning a string used to crash the whole cycle (and `kerno-otel doctor`,
    # exit 1) with AttributeError where its "findings" were read.
    log_path = tmp_path / "kerno-audit.jsonl"
    err = io.StringIO()
    with AuditLog(AuditConfig(file_path=str(log_path))) as log:
        doctor = Doctor(
            log,
            Settings(duration=0.01),
            sources={"fixed": Fixed({"mem.used_pct": 97.0})},
            rules={"odd": rule, "high_memory": high_memory},
            sinks={},
            rule_plugins={"odd": PluginInfo("acme", "acme-kerno", "1.2")},
            stderr=err,
        )
        result = doctor.run_cycle()
    assert result is not None
    assert [(f.rule, f.severity) for f in result.findings] == [
        ("odd", "INFO"),
        ("high_memory", "CRITICAL"),
    ]
    assert err.getvalue() == (
        f"kerno-otel: plugin 'acme' (acme-kerno 1.2) failed in rule:odd: TypeError: {why}\n"
    )
    errors = [r["details"] for r in stream_records(log_path) if r["type"] == "plugin.error"]
    assert [(e["plugin"], e["hook"], e["error_type"]) for e in errors] == [
        ("acme", "rule:odd", "TypeError")
    ]


def test_a_source_factory_returning_no_source_is_left_out_as_a_plugin_error(
    tmp_path: Path,
) -> None:
    log_path = tmp_path / "kerno-audit.jsonl"
    err = io.StringIO()
    config = config_with(tmp_path, "doctor:\n  duration: 1s\n  sinks: []\n")
    with AuditLog(AuditConfig(file_path=str(log_path))) as log:
        doctor = build_doctor(
            log,
            config,
            sources={"odd": lambda c: object(), "fixed": lambda c: Fixed({"mem.used_pct": 9.0})},
            rules={"high_memory": high_memory},
            sinks={},
            source_plugins={"odd": PluginInfo("acme", "acme-kerno", "1.2")},
            stderr=err,
        )
        assert list(doctor.sources) == ["fixed"]
    assert err.getvalue() == (
        "kerno-otel: plugin 'acme' (acme-kerno 1.2) failed in source:odd: TypeError: "
        "the factory returned object, not a Source\n"
    )


def diskguard(given: RuleInput) -> list[Finding]:
    used = given.signals.values.get("disk.used_pct", 0.0)
    limit = given.thresholds["diskguard_pct"]
    return [Finding("diskguard", "WARNING", f"disk {used}%")] if used > limit else []


diskguard.thresholds = {"diskguard_pct": 90.0}  # type: ignore[attr-defined]


def test_a_plugin_rule_declares_its_own_threshold(tmp_path: Path) -> None:
    # Issue 13, 7: `unknown threshold 'diskguard_pct'` used to refuse the config.
    config = config_with(tmp_path, "doctor:\n  sinks: []\n  thresholds:\n    diskguard_pct: 70\n")
    no_sinks = config_with(tmp_path, "doctor:\n  sinks: []\n")
    with AuditLog(AuditConfig(file_path=str(tmp_path / "a.jsonl"))) as log:
        default = build_doctor(log, no_sinks, sources={}, rules={"d": diskguard}, sinks={})
        assert default.settings.thresholds["diskguard_pct"] == 90.0
        doctor = build_doctor(log, config, sources={}, rules={"d": diskguard}, sinks={})
        assert doctor.settings.thresholds["diskguard_pct"] == 70.0
        assert doctor.settings.thresholds["oom_memory_pct"] == 90.0
        assert doctor.evaluate(Signals(1.0, {"disk.used_pct": 80.0})) == [
            Finding("diskguard", "WARNING", "disk 80.0%")
        ]
        # Without the rule that declares it, the key is a typo, named.
        with pytest.raises(ConfigError) as info:
            build_doctor(log, config, sources={}, rules={"h": high_memory}, sinks={})
    assert str(info.value).startswith(
        "doctor.thresholds: unknown threshold 'diskguard_pct' (known: disk_p99_critical_ns, "
    )


# --- the daemon --------------------------------------------------------------------------------


def test_the_daemon_runs_cycles_and_audits_them(tmp_path: Path) -> None:
    log = tmp_path / "log" / "kerno-audit.jsonl"
    config = tmp_path / "kerno.yaml"
    # oom_memory_pct 0: every cycle finds oom_imminent, so every cycle sends and records.
    config.write_text(
        f"audit:\n  file_path: {log}\n"
        "doctor:\n  duration: 1s\n  interval: 1s\n  thresholds:\n    oom_memory_pct: 0\n"
        + QUIET_THRESHOLDS
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("KERNO_")}
    env["KERNO_OTEL_PLUGINS"] = "lifecycle,procfs,doctor"
    proc = subprocess.Popen(
        [sys.executable, "-m", "kerno_otel", "run", "--config", str(config)],
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=tmp_path,
    )
    assert proc.stderr is not None
    # Bounded: a daemon that hangs silently is killed, which ends the reads below.
    watchdog = threading.Timer(120, proc.kill)
    watchdog.start()
    try:
        lines = [proc.stderr.readline()]
        while len([line for line in lines if "doctor: CRITICAL oom_imminent" in line]) < 2:
            lines.append(proc.stderr.readline())
            assert lines[-1], "".join(lines)
    finally:
        watchdog.cancel()
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 0
    records = stream_records(log)
    emits = [r for r in records if r["type"] == "finding.emit"]
    assert len(emits) >= 2
    assert {(r["details"]["rule"], r["details"]["sink"]) for r in emits} == {
        ("oom_imminent", "log")
    }
    ids = [r["details"]["cycle_id"] for r in emits]
    assert len(set(ids)) == len(ids)
    types = [r["type"] for r in records]
    assert types.index("daemon.start") < types.index("finding.emit")
    assert max(i for i, t in enumerate(types) if t == "finding.emit") < types.index("daemon.stop")
    validator = RecordValidator(SchemaSet.builtin())
    assert [validator.check(r) for r in records] == [None] * len(records)
