"""A rule or source failing cycle after cycle: one plugin.error at once, repeats folded, none lost.

Real doctor cycles (short windows) on a real AuditLog; the only thing faked is the fold's
monotonic clock, where a test needs five minutes to pass.
"""

from __future__ import annotations

import io
import os
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import QUIET_THRESHOLDS, fake_distribution, stream_records
from jsonschema import Draft202012Validator

from kerno_otel import (
    AuditConfig,
    AuditLog,
    FailureFold,
    Finding,
    PluginInfo,
    RuleInput,
    Signals,
    build_doctor,
    load_config,
)
from kerno_otel.audit.chain import parse_ts
from kerno_otel.doctor.engine import Doctor, Settings
from kerno_otel.records.schema import BUNDLE, SchemaSet
from kerno_otel.records.validate import RecordValidator, reference_check, reference_validator
from kerno_otel.review.report import report_of

ACME = PluginInfo("acme", "acme-kerno", "1.2")
TS = r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{9}Z"
FIRST = "kerno-otel: plugin 'acme' (acme-kerno 1.2) failed in rule:flaky: {}\n"


class Fixed:
    def begin(self) -> int:
        return 1

    def end(self, begun: int, window_s: float) -> Signals:
        return Signals(window_s, {"mem.used_pct": 50.0})


class Flaky:
    """A rule that raises what ``self.error`` says (None: it runs fine), and counts its failures."""

    def __init__(self) -> None:
        self.error: Exception | None = ZeroDivisionError("oops")
        self.failed = 0

    def __call__(self, given: RuleInput) -> list[Finding]:
        if self.error is not None:
            self.failed += 1
            raise self.error
        return []


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def log(tmp_path: Path) -> Iterator[AuditLog]:
    with AuditLog(AuditConfig(file_path=str(tmp_path / "kerno-audit.jsonl"))) as audit:
        yield audit


def errors(log: AuditLog) -> list[dict[str, Any]]:
    """The plugin.error records on disk now, after checking every record against the schema."""
    log.flush()
    records = stream_records(Path(log.config.file_path))
    validator = RecordValidator(SchemaSet.builtin())
    assert [validator.check(r) for r in records] == [None] * len(records)
    return [r for r in records if r["type"] == "plugin.error"]


def shape(records: list[dict[str, Any]]) -> list[tuple[str, str, int | None]]:
    return [
        (r["details"]["hook"], r["details"]["error_type"], r["details"].get("suppressed"))
        for r in records
    ]


def failures_in(records: list[dict[str, Any]]) -> int:
    return sum(1 + r["details"].get("suppressed", 0) for r in records)


def doctor(log: AuditLog, rule: Flaky, fold: FailureFold) -> Doctor:
    return Doctor(
        log,
        Settings(duration=0.001),
        sources={"fixed": Fixed()},
        rules={"flaky": rule},
        sinks={},
        rule_plugins={"flaky": ACME},
        failures=fold,
    )


def test_a_rule_failing_n_cycles_is_one_record_then_one_fold_with_the_exact_count(
    log: AuditLog,
) -> None:
    err = io.StringIO()
    fold = FailureFold(log, err)
    rule = Flaky()
    n = 40
    for _ in range(n):
        # A new doctor every cycle, as the daemon builds one: the fold is what carries over.
        assert doctor(log, rule, fold).run_cycle() is not None
    assert shape(errors(log)) == [("rule:flaky", "ZeroDivisionError", None)]
    assert fold.pending == n - 1
    fold.close()
    records = errors(log)
    assert shape(records) == [
        ("rule:flaky", "ZeroDivisionError", None),
        ("rule:flaky", "ZeroDivisionError", n - 2),
    ]
    assert failures_in(records) == rule.failed == n == fold.failures
    folded = records[1]["details"]
    assert parse_ts(records[0]["ts"]) <= parse_ts(folded["first_ts"])
    assert parse_ts(folded["first_ts"]) < parse_ts(folded["last_ts"]) <= parse_ts(records[1]["ts"])
    lines = err.getvalue().splitlines(keepends=True)
    assert lines[0] == FIRST.format("ZeroDivisionError: oops")
    assert re.fullmatch(
        re.escape(FIRST.format(f"ZeroDivisionError: oops ({n - 1} more times, ")[:-1])
        + f"({TS}) to ({TS})\\)\n",
        lines[1],
    )
    assert len(lines) == 2
    assert fold.pending == 0


def test_recovery_writes_the_fold_and_the_next_failure_is_written_at_once(log: AuditLog) -> None:
    fold = FailureFold(log, io.StringIO())
    rule = Flaky()
    for _ in range(5):
        doctor(log, rule, fold).run_cycle()
    rule.error = None
    doctor(log, rule, fold).run_cycle()
    # Written when the rule ran fine again, not at close.
    assert shape(errors(log)) == [
        ("rule:flaky", "ZeroDivisionError", None),
        ("rule:flaky", "ZeroDivisionError", 3),
    ]
    doctor(log, rule, fold).run_cycle()
    rule.error = ZeroDivisionError("oops")
    doctor(log, rule, fold).run_cycle()
    assert shape(errors(log))[2:] == [("rule:flaky", "ZeroDivisionError", None)]
    fold.close()
    records = errors(log)
    assert len(records) == 3
    assert failures_in(records) == rule.failed == 6


def test_a_change_of_error_type_writes_the_fold_and_starts_a_new_record(log: AuditLog) -> None:
    err = io.StringIO()
    fold = FailureFold(log, err)
    rule = Flaky()
    for _ in range(3):
        doctor(log, rule, fold).run_cycle()
    rule.error = KeyError("gone")
    doctor(log, rule, fold).run_cycle()
    assert shape(errors(log)) == [
        ("rule:flaky", "ZeroDivisionError", None),
        ("rule:flaky", "ZeroDivisionError", 1),
        ("rule:flaky", "KeyError", None),
    ]
    doctor(log, rule, fold).run_cycle()
    fold.close()
    records = errors(log)
    assert shape(records)[3:] == [("rule:flaky", "KeyError", 0)]
    assert failures_in(records) == rule.failed == 5
    assert [line.split(": ", 2)[1] for line in err.getvalue().splitlines()] == [
        "plugin 'acme' (acme-kerno 1.2) failed in rule:flaky",
    ] * 4


def test_a_long_failure_is_written_every_interval(log: AuditLog) -> None:
    clock = Clock()
    fold = FailureFold(log, io.StringIO(), interval=300.0, clock=clock)
    rule = Flaky()
    for _ in range(7):  # at 0, 100, ..., 600 s
        doctor(log, rule, fold).run_cycle()
        clock.now += 100.0
    # The first at once; repeats at 100..300 s folded, written at 300 s; 400..600 s at 600 s.
    assert shape(errors(log)) == [
        ("rule:flaky", "ZeroDivisionError", None),
        ("rule:flaky", "ZeroDivisionError", 2),
        ("rule:flaky", "ZeroDivisionError", 2),
    ]
    assert fold.pending == 0
    fold.close()
    assert failures_in(errors(log)) == rule.failed == 7


def test_a_fold_whose_rule_is_gone_is_written_at_the_next_cycle_after_the_interval(
    log: AuditLog,
) -> None:
    clock = Clock()
    fold = FailureFold(log, io.StringIO(), interval=300.0, clock=clock)
    rule = Flaky()
    for _ in range(3):
        doctor(log, rule, fold).run_cycle()
    # A reload left the plugin out: nothing calls the rule again, and it never recovers.
    other = Doctor(
        log, Settings(duration=0.001), sources={"fixed": Fixed()}, rules={}, sinks={}, failures=fold
    )
    other.run_cycle()
    assert fold.pending == 2
    clock.now += 300.0
    other.run_cycle()
    assert shape(errors(log)) == [
        ("rule:flaky", "ZeroDivisionError", None),
        ("rule:flaky", "ZeroDivisionError", 1),
    ]
    assert fold.pending == 0


def test_a_source_factory_failing_every_cycle_is_folded_and_closing_writes_it(
    tmp_path: Path, log: AuditLog
) -> None:
    config_file = tmp_path / "kerno.yaml"
    config_file.write_text("doctor:\n  duration: 1s\n  sinks: []\n")
    config = load_config(config_file, env={})
    fold = FailureFold(log, io.StringIO())
    calls = []

    def broken_factory(config: object) -> None:
        calls.append(1)
        raise OSError("no such device")

    for _ in range(4):
        built = build_doctor(
            log,
            config,
            sources={"broken": broken_factory},
            rules={},
            sinks={},
            source_plugins={"broken": ACME},
            failures=fold,
        )
        assert list(built.sources) == []
    built.close()  # the doctor's close is the fold's: the daemon's shutdown path
    records = errors(log)
    assert shape(records) == [("source:broken", "OSError", None), ("source:broken", "OSError", 2)]
    assert failures_in(records) == len(calls) == 4


def test_after_close_every_failure_is_written_at_once(log: AuditLog) -> None:
    fold = FailureFold(log, io.StringIO())
    fold.close()
    fold.close()  # safe twice
    rule = Flaky()
    for _ in range(2):
        doctor(log, rule, fold).run_cycle()
    assert shape(errors(log)) == [("rule:flaky", "ZeroDivisionError", None)] * 2
    assert fold.pending == 0


def test_the_report_counts_one_plus_suppressed(log: AuditLog) -> None:
    fold = FailureFold(log, io.StringIO())
    rule = Flaky()
    for _ in range(12):
        doctor(log, rule, fold).run_cycle()
    fold.close()
    log.close()
    report = report_of([log.config.file_path], None)
    assert report["plugin_errors"] == [
        {
            "plugin": "acme",
            "hook": "rule:flaky",
            "error_type": "ZeroDivisionError",
            "records": 2,
            "suppressed": 10,
            "count": 12,
        }
    ]


def test_the_schema_refuses_a_fold_field_without_the_others() -> None:
    schemas = SchemaSet.builtin()
    fast, reference = RecordValidator(schemas), reference_validator(schemas)
    bundle = Draft202012Validator(schemas.documents()[BUNDLE])

    def check(record: dict[str, Any]) -> list[bool]:
        """Valid? by jsonschema-rs, the reference library, and a third party given the bundle."""
        return [
            fast.check(record) is None,
            reference_check(reference, record) is None,
            bundle.is_valid(record),
        ]

    details = {
        "plugin": "acme",
        "distribution": "acme-kerno",
        "version": "1.2",
        "hook": "rule:flaky",
        "error_type": "ZeroDivisionError",
        "error_digest": "sha256:" + "ab" * 32,
    }
    record = {
        "v": "1",
        "ts": "2026-11-29T12:00:00.000000000Z",
        "type": "plugin.error",
        "actor": "plugins/manager",
        "details": details,
    }
    assert check(record) == [True] * 3
    for fields in (
        {"suppressed": 3},
        {"first_ts": "2026-11-29T12:00:00.000000000Z"},
        {"suppressed": 3, "first_ts": record["ts"]},
        {"suppressed": -1, "first_ts": record["ts"], "last_ts": record["ts"]},
        {"suppressed": 1, "first_ts": "yesterday", "last_ts": record["ts"]},
    ):
        assert check({**record, "details": {**details, **fields}}) == [False] * 3, fields
    folded = {"suppressed": 3, "first_ts": record["ts"], "last_ts": record["ts"]}
    assert check({**record, "details": {**details, **folded}}) == [True] * 3


CRASHING_RULE = """
from kerno_otel import hookimpl

def crash(given):
    raise ZeroDivisionError("oops")

@hookimpl
def register_doctor_rules(register):
    register("crash", crash)
"""


def test_the_daemon_writes_the_fold_when_it_stops(tmp_path: Path) -> None:
    site = tmp_path / "site"
    fake_distribution(site, "kerno-test-crashrule", "1.0", {"kerno_test_crashrule": CRASHING_RULE})
    log = tmp_path / "log" / "kerno-audit.jsonl"
    config = tmp_path / "kerno.yaml"
    # oom_memory_pct 0: every cycle sends one finding.emit, so the log counts the cycles.
    config.write_text(
        f"audit:\n  file_path: {log}\n"
        "doctor:\n  duration: 1s\n  interval: 1s\n  thresholds:\n    oom_memory_pct: 0\n"
        + QUIET_THRESHOLDS
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("KERNO_")}
    env["KERNO_OTEL_PLUGINS"] = "lifecycle,procfs,doctor,crashrule"
    env["PYTHONPATH"] = os.pathsep.join([str(site), env.get("PYTHONPATH", "")])
    proc = subprocess.Popen(
        [sys.executable, "-m", "kerno_otel", "run", "--config", str(config)],
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=tmp_path,
    )
    assert proc.stderr is not None
    watchdog = threading.Timer(120, proc.kill)  # bounded: a hung daemon ends the reads
    watchdog.start()
    try:
        lines = [proc.stderr.readline()]
        while len([line for line in lines if "doctor: CRITICAL oom_imminent" in line]) < 3:
            lines.append(proc.stderr.readline())
            assert lines[-1], "".join(lines)
        proc.send_signal(signal.SIGTERM)
        _, rest = proc.communicate(timeout=60)
    finally:
        watchdog.cancel()
    assert proc.returncode == 0
    failed = "kerno-otel: plugin 'crashrule' (kerno-test-crashrule 1.0) failed in rule:crash: "
    # While it ran: the first failure only, though every cycle failed.
    assert [line for line in lines if failed in line] == [failed + "ZeroDivisionError: oops\n"]
    records = stream_records(log)
    validator = RecordValidator(SchemaSet.builtin())
    assert [validator.check(r) for r in records] == [None] * len(records)
    cycles = len([r for r in records if r["type"] == "finding.emit"])
    crashes = [
        r for r in records if r["type"] == "plugin.error" and r["details"]["hook"] == "rule:crash"
    ]
    assert shape(crashes) == [
        ("rule:crash", "ZeroDivisionError", None),
        ("rule:crash", "ZeroDivisionError", cycles - 2),
    ]
    assert failures_in(crashes) == cycles >= 3
    # Written by the doctor's shutdown, while the log is open: before daemon.stop.
    assert records.index(crashes[-1]) < [r["type"] for r in records].index("daemon.stop")
    # Its stderr line at shutdown, with the same count.
    at_stop = [line for line in rest.splitlines() if failed in line]
    assert len(at_stop) == 1
    assert re.fullmatch(
        re.escape(f"{failed}ZeroDivisionError: oops ({cycles - 1} more times, ")
        + f"{TS} to {TS}\\)",
        at_stop[0],
    )
