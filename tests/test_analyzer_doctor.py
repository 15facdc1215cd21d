"""The analyzer inside a real doctor cycle: one cycle_id links finding.emit and ai.call."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import stream_records
from kerno_otel_plugins import analyzer
from kerno_otel_plugins.doctor import LogSink
from test_analyzer import ai_config, serve

from kerno_otel.audit.log import AuditLog
from kerno_otel.config import AuditConfig
from kerno_otel.doctor.engine import Doctor, Settings
from kerno_otel.findings import Finding, Signals
from kerno_otel.records.schema import SchemaSet
from kerno_otel.records.validate import RecordValidator


class LeakySource:
    """Signals whose context holds an address, a pid and a home path."""

    def begin(self) -> int:
        return 0

    def end(self, begun: int, window_s: float) -> Signals:
        return Signals(
            window_s,
            {"mem.used_pct": 97.0},
            context={"top": "java pid=4242 at 10.1.2.3 in /home/alice/secret"},
        )


def memory_rule(given: Any) -> list[Finding]:
    used = given.signals.values.get("mem.used_pct", 0.0)
    top = given.signals.context.get("top", "")
    if used <= 90:
        return []
    return [Finding("oom_imminent", "CRITICAL", "Memory almost exhausted", {"top": top})]


@pytest.fixture
def server() -> Iterator[Any]:
    yield from serve()


@pytest.mark.parametrize("mode", ["redacted", "summary"])
def test_one_cycle_links_finding_emit_and_ai_call(mode: str, server: Any, tmp_path: Path) -> None:
    log_path = tmp_path / "kerno-audit.jsonl"
    with AuditLog(AuditConfig(file_path=str(log_path))) as log:
        built = analyzer.build(log, ai_config(server, "anthropic", privacy_mode=mode), env={})
        doctor = Doctor(
            log,
            Settings(duration=0.01),
            sources={"leaky": LeakySource()},
            rules={"oom_imminent": memory_rule},
            sinks={"log": LogSink(io.StringIO())},
            analyzer=built,
        )
        result = doctor.run_cycle()
        built.close()

    assert result is not None and result.analysis is not None
    assert result.analysis.fallback is False
    [request] = server.requests
    for leak in (b"4242", b"10.1.2.3", b"/home/alice", b"alice"):
        assert leak not in request.body, leak
    assert (b"java" in request.body) == (mode == "redacted")
    records = stream_records(log_path)
    validator = RecordValidator(SchemaSet.builtin())
    assert [validator.check(r) for r in records] == [None] * len(records)
    linked = [r for r in records if r["details"].get("cycle_id") == result.cycle_id]
    assert [r["type"] for r in linked] == ["finding.emit", "ai.call"]
    assert linked[1]["details"]["privacy_mode"] == mode
