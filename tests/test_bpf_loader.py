"""kerno_otel/bpf/loader.py: one bpf.load record per attempt, failures isolated and redacted.

The programs here are plugin-side programs written for the test (the contract's
protocol, no kernel); tests/test_plugin_bpf.py loads the real ones.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from helpers import stream_records

from kerno_otel import AuditConfig, AuditLog, BPFStats, BPFUnavailable, Config
from kerno_otel.bpf.loader import BPFLoader, error_text, selected
from kerno_otel.records.schema import SchemaSet
from kerno_otel.records.validate import RecordValidator


class Program:
    """A program whose load does what the test says."""

    def __init__(self, fails: BaseException | None = None) -> None:
        self.tracepoints = ("sched:sched_switch",)
        self.fails = fails
        self.loads = 0
        self.closes = 0

    def load(self) -> None:
        self.loads += 1
        if self.fails is not None:
            raise self.fails

    def stats(self) -> BPFStats:
        return BPFStats(events=7 * self.loads, lost=0)

    def close(self) -> None:
        self.closes += 1


def config(**bpf: Any) -> Config:
    return Config(sections={"bpf": {"enabled": True, "programs": ["a", "b", "c"], **bpf}})


def open_log(tmp_path: Path) -> tuple[AuditLog, Path]:
    live = tmp_path / "kerno-audit.jsonl"
    return AuditLog(AuditConfig(file_path=str(live)), stderr=io.StringIO()), live


def test_every_attempt_is_a_valid_record_and_a_failure_stops_nothing(tmp_path: Path) -> None:
    log, live = open_log(tmp_path)
    err = io.StringIO()
    secret = "compile failed: error: '/root/build/secret.h' file not found, token=abc123"
    programs = {
        "a": Program(),
        "b": Program(RuntimeError(secret + "\nmore compiler output")),
        "c": Program(BPFUnavailable("not root (loading BPF needs CAP_BPF and CAP_PERFMON)")),
    }
    loader = BPFLoader(log, err)
    results = loader.load_selected(config(), programs)
    assert [(r.name, r.success) for r in results] == [("a", True), ("b", False), ("c", False)]
    assert list(loader.loaded) == ["a"]
    assert loader.stats() == {"a": BPFStats(7, 0)}
    loader.close()
    loader.close()  # safe twice
    log.close()
    assert [p.closes for p in programs.values()] == [1, 0, 0]

    records = [r for r in stream_records(live) if r["type"] == "bpf.load"]
    validator = RecordValidator(SchemaSet.builtin())
    assert [validator.check(r) for r in records] == [None, None, None]
    assert [(r["outcome"], r["severity"]) for r in records] == [
        ("success", "INFO"),
        ("failure", "WARN"),
        ("failure", "WARN"),
    ]
    assert records[0]["details"] == {
        "program": "a",
        "attach": ["sched:sched_switch"],
        "success": True,
    }
    assert records[2]["details"]["error"] == "not root (loading BPF needs CAP_BPF and CAP_PERFMON)"
    scrubbed = records[1]["details"]["error"]
    assert scrubbed.startswith("compile failed: error: '/root/")
    assert "secret.h" not in scrubbed and "abc123" not in scrubbed
    assert "more compiler output" not in scrubbed
    # Said once each on stderr, scrubbed the same way.
    lines = err.getvalue().splitlines()
    assert len(lines) == 2
    assert lines[1] == (
        "kerno-otel: bpf: c not loaded: not root (loading BPF needs CAP_BPF and CAP_PERFMON); "
        "its signals come from procfs where it has them"
    )
    assert "secret.h" not in lines[0] and lines[0].startswith("kerno-otel: bpf: b not loaded: ")


def test_disabled_loads_nothing_and_says_so_once(tmp_path: Path) -> None:
    log, live = open_log(tmp_path)
    err = io.StringIO()
    program = Program()
    assert BPFLoader(log, err).load_selected(config(enabled=False), {"a": program}) == []
    log.close()
    assert program.loads == 0
    assert err.getvalue() == (
        "kerno-otel: bpf: off (bpf.enabled is false): the doctor uses procfs only\n"
    )
    assert [r["type"] for r in stream_records(live)] == ["audit.start"]


def test_selection_and_unknown_names(tmp_path: Path) -> None:
    programs = {"a": Program(), "z": Program()}
    assert selected(config(), programs) == (["a"], ["b", "c"])
    log, _ = open_log(tmp_path)
    err = io.StringIO()
    BPFLoader(log, err).load_selected(config(), programs)
    log.close()
    assert err.getvalue() == (
        "kerno-otel: bpf: bpf.programs: no plugin registers 'b', 'c' (known: a, z)\n"
    )
    assert (programs["a"].loads, programs["z"].loads) == (1, 0)


def test_no_bpf_plugin_is_silent(tmp_path: Path) -> None:
    log, _ = open_log(tmp_path)
    err = io.StringIO()
    assert BPFLoader(log, err).load_selected(config(), {}) == []
    log.close()
    assert err.getvalue() == ""


def test_error_text_is_one_short_line() -> None:
    assert error_text(RuntimeError("\n  first\nsecond")) == "first"
    assert error_text(KeyError()) == "KeyError"
    assert len(error_text(RuntimeError("x" * 1000))) == 300


def test_each_load_is_a_span_its_record_carries_and_lost_events_are_exported(
    tmp_path: Path,
) -> None:
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from kerno_otel import Telemetry

    spans = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(spans))
    reader = InMemoryMetricReader()
    telemetry = Telemetry(
        tracer_provider=tracer_provider, meter_provider=MeterProvider(metric_readers=[reader])
    )

    class Lossy(Program):
        def stats(self) -> BPFStats:
            return BPFStats(events=10, lost=4)

    log, live = open_log(tmp_path)
    loader = BPFLoader(log, io.StringIO(), telemetry)
    loader.load({"a": Lossy(), "b": Program(RuntimeError("attach failed"))})
    assert log.flush()
    data = reader.get_metrics_data()
    loader.close()
    log.close()
    telemetry.shutdown()

    by_program = {s.attributes["kerno.bpf.program"]: s for s in spans.get_finished_spans()}
    assert sorted(by_program) == ["a", "b"]
    assert by_program["a"].attributes["kerno.bpf.success"] is True
    assert by_program["b"].attributes["kerno.bpf.success"] is False
    assert not by_program["b"].status.is_ok
    for record in (r for r in stream_records(live) if r["type"] == "bpf.load"):
        span = by_program[record["details"]["program"]]
        assert record["trace_id"] == f"{span.context.trace_id:032x}"
        assert record["span_id"] == f"{span.context.span_id:016x}"
    assert data is not None
    lost = [
        (dict(p.attributes or {}), p.value)
        for rm in data.resource_metrics
        for sm in rm.scope_metrics
        for m in sm.metrics
        if m.name == "kerno.bpf.lost_events"
        for p in m.data.data_points
    ]
    assert lost == [({"kerno.bpf.program": "a"}, 4)]  # only loaded programs are observed


def test_the_export_after_close_still_holds_the_programs_last_lost_count(tmp_path: Path) -> None:
    # The daemon closes its programs before its last metric export (at shutdown); a
    # closed bcc program counts nothing (stats() is all zeros), so that export said 0.
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    from kerno_otel import Telemetry

    class Lossy(Program):
        def stats(self) -> BPFStats:
            return BPFStats(events=10, lost=0 if self.closes else 4)

    reader = InMemoryMetricReader()
    telemetry = Telemetry(meter_provider=MeterProvider(metric_readers=[reader]))
    log, _ = open_log(tmp_path)
    loader = BPFLoader(log, io.StringIO(), telemetry)
    loader.load({"a": Lossy()})
    loader.close()
    data = reader.get_metrics_data()
    log.close()
    telemetry.shutdown()
    assert data is not None
    lost = [
        p.value
        for rm in data.resource_metrics
        for sm in rm.scope_metrics
        for m in sm.metrics
        if m.name == "kerno.bpf.lost_events"
        for p in m.data.data_points
    ]
    assert lost == [4]
