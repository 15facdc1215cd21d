"""A plugin's failure as a record and a stderr line: whatever its exception does, none is lost.

Real doctor cycles on a real AuditLog: a plugin's exception may refuse to be printed (its
``__str__`` raises) or carry a secret in its text or even in its class's name.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

from helpers import stream_records

from kerno_otel import AuditConfig, AuditLog, FailureFold, PluginInfo, RuleInput, Signals
from kerno_otel.daemon.failures import exception_line, failure_line, failure_of
from kerno_otel.doctor.engine import Doctor, Settings
from kerno_otel.records.schema import SchemaSet
from kerno_otel.records.validate import RecordValidator
from kerno_otel.telemetry import Telemetry

ACME = PluginInfo("acme", "acme-kerno", "1.2")
TOKEN = "ghp_" + "a1B2c3D4e5" * 4
HOME = "/home/bob/.ssh/id_rsa"


class Unprintable(Exception):
    def __str__(self) -> str:
        raise RuntimeError("no text for you")


#: A plugin may name (or make) its exception class anything at all.
Named = type(f"Bad token={TOKEN} {HOME}", (Exception,), {})


class Fixed:
    def begin(self) -> int:
        return 1

    def end(self, begun: int, window_s: float) -> Signals:
        return Signals(window_s, {"mem.used_pct": 50.0})


def raising(exc: Exception) -> object:
    def rule(given: RuleInput) -> list[object]:
        raise exc

    return rule


def cycles(tmp_path: Path, exc: Exception, n: int) -> tuple[list[dict[str, Any]], str]:
    """``n`` cycles of a rule raising ``exc``; the schema-checked records and stderr."""
    err = io.StringIO()
    with AuditLog(AuditConfig(file_path=str(tmp_path / "kerno-audit.jsonl"))) as log:
        fold = FailureFold(log, err)
        for _ in range(n):
            doctor = Doctor(
                log,
                Settings(duration=0.001),
                sources={"fixed": Fixed()},
                rules={"bad": raising(exc)},  # type: ignore[dict-item]
                sinks={},
                rule_plugins={"bad": ACME},
                failures=fold,
            )
            result = doctor.run_cycle()
            assert result is not None
            assert [f.rule for f in result.findings] == ["bad"]
        fold.close()
    records = stream_records(tmp_path / "kerno-audit.jsonl")
    validator = RecordValidator(SchemaSet.builtin())
    assert [validator.check(r) for r in records] == [None] * len(records)
    return [r for r in records if r["type"] == "plugin.error"], err.getvalue()


def test_an_exception_whose_str_raises_is_still_recorded_and_folded(tmp_path: Path) -> None:
    errors, err = cycles(tmp_path, Unprintable(), 5)
    details = [r["details"] for r in errors]
    assert [(d["hook"], d["error_type"], d.get("suppressed")) for d in details] == [
        ("rule:bad", "Unprintable", None),
        ("rule:bad", "Unprintable", 3),
    ]
    lines = err.splitlines()
    assert lines[0] == (
        "kerno-otel: plugin 'acme' (acme-kerno 1.2) failed in rule:bad: Unprintable: <str() failed>"
    )
    assert len(lines) == 2 and "(4 more times, " in lines[1]


def test_a_secret_in_the_message_or_the_class_name_reaches_no_output(tmp_path: Path) -> None:
    errors, err = cycles(tmp_path, Named(f"password=hunter2 {TOKEN} {HOME} pid=4242"), 3)
    out = err + json.dumps(errors)
    for secret in (TOKEN, "hunter2", "id_rsa", "4242"):
        assert secret not in out
    assert len(errors) == 2 and len(err.splitlines()) == 2
    assert "[REDACTED" in errors[0]["details"]["error_type"]


def test_exception_line_never_raises() -> None:
    class NotText(Exception):
        def __str__(self) -> str:
            return 42  # type: ignore[return-value]

    assert exception_line(Unprintable()) == "<str() failed>"
    assert exception_line(NotText()) == "<str() failed>"
    assert exception_line(ValueError("a\nb")) == "a"
    assert exception_line(ValueError("")) == ""
    assert exception_line(ValueError("x" * 500), 10) == "x" * 10
    line = failure_line(failure_of(ACME, "rule:x", Unprintable()))
    assert line.endswith("failed in rule:x: Unprintable: <str() failed>\n")


class Switch:
    """A rule that raises while ``self.error`` is set."""

    def __init__(self) -> None:
        self.error: Exception | None = ZeroDivisionError("oops")

    def __call__(self, given: RuleInput) -> list[object]:
        if self.error is not None:
            raise self.error
        return []


def test_the_first_failure_carries_its_rule_span_and_a_folded_record_none(tmp_path: Path) -> None:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    spans = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(spans))
    telemetry = Telemetry(tracer_provider=provider)
    rule = Switch()
    with AuditLog(AuditConfig(file_path=str(tmp_path / "kerno-audit.jsonl"))) as log:
        fold = FailureFold(log, io.StringIO())
        for cycle in range(5):
            if cycle == 3:
                rule.error = None  # works again: the fold of cycles 2 and 3 is written now
            if cycle == 4:
                rule.error = KeyError("k")  # another type: written at once, in its span
            Doctor(
                log,
                Settings(duration=0.001),
                sources={"fixed": Fixed()},
                rules={"bad": rule},  # type: ignore[dict-item]
                sinks={},
                rule_plugins={"bad": ACME},
                failures=fold,
                telemetry=telemetry,
            ).run_cycle()
        fold.close()
    provider.shutdown()
    written = [
        r for r in stream_records(tmp_path / "kerno-audit.jsonl") if r["type"] == "plugin.error"
    ]
    assert [(r["details"]["error_type"], r["details"].get("suppressed")) for r in written] == [
        ("ZeroDivisionError", None),
        ("ZeroDivisionError", 1),
        ("KeyError", None),
    ]
    failed_rule_spans = {
        (f"{s.context.trace_id:032x}", f"{s.context.span_id:016x}")
        for s in spans.get_finished_spans()
        if s.name == "kerno.doctor.rule" and not s.status.is_ok
    }
    first, folded, other = written
    assert (first["trace_id"], first["span_id"]) in failed_rule_spans
    assert (other["trace_id"], other["span_id"]) in failed_rule_spans
    assert first["trace_id"] != other["trace_id"]
    # Its failures were in two earlier cycles' traces; the span around its writing (the
    # rule working again) is none of them.
    assert "trace_id" not in folded and "span_id" not in folded
