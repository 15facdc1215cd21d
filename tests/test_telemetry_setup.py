"""kerno_otel/telemetry/setup.py: one command's telemetry on its audit log; off costs nothing,
a one-shot command exports its metrics once, at shutdown, and shutdown is bounded."""

from __future__ import annotations

import io
import os
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import stream_records, wait_until
from otlp_receivers import TelemetryReceiver

from kerno_otel.audit.log import AuditLog
from kerno_otel.config import AuditConfig
from kerno_otel.telemetry import TelemetrySettings, start_telemetry


@pytest.fixture
def log(tmp_path: Path) -> Iterator[AuditLog]:
    with AuditLog(AuditConfig(file_path=str(tmp_path / "audit.jsonl"))) as opened:
        yield opened


@pytest.fixture
def receiver() -> Iterator[TelemetryReceiver]:
    running = TelemetryReceiver().start()
    yield running
    running.stop()


def _readers() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name == "OtelPeriodicExportingMetricReader"]


def test_off_builds_nothing_and_says_nothing(log: AuditLog) -> None:
    err = io.StringIO()
    for once in (False, True):
        telemetry = start_telemetry(TelemetrySettings(), log, stderr=err, once=once)
        assert not telemetry.tracing
        assert telemetry.prometheus_text() is None
        with telemetry.tracer.start_as_current_span("x") as span:
            assert not span.get_span_context().is_valid
        telemetry.shutdown()
    assert err.getvalue() == ""


def test_the_daemon_serves_metrics_even_with_nothing_exported(log: AuditLog) -> None:
    err = io.StringIO()
    telemetry = start_telemetry(TelemetrySettings(), log, stderr=err, serve_metrics=True)
    assert b"kerno_audit_records_written" in (telemetry.prometheus_text() or b"")
    telemetry.shutdown()
    assert err.getvalue() == ""


def test_a_one_shot_command_exports_its_metrics_once_at_shutdown(
    tmp_path: Path, log: AuditLog, receiver: TelemetryReceiver
) -> None:
    settings = TelemetrySettings(
        traces=("otlp",),
        metrics=("otlp", "prometheus"),
        endpoint=receiver.endpoint,
        interval_ms=10.0,  # asked for, and not used: one export, at shutdown
    )
    err = io.StringIO()
    before = _readers()
    telemetry = start_telemetry(settings, log, stderr=err, once=True)
    assert _readers() == before  # no periodic reader thread
    assert telemetry.prometheus_text() is None  # nothing serves /metrics here
    with telemetry.tracer.start_as_current_span("kerno.doctor.cycle"):
        log.emit("bpf.load", details={"program": "p", "attach": [], "success": True})
    telemetry.instruments.cycle_duration.record(1.5, {"kerno.doctor.outcome": "completed"})
    assert receiver.metric_requests == []
    telemetry.shutdown()
    telemetry.shutdown()  # safe twice

    assert err.getvalue() == (
        "kerno-otel: telemetry: prometheus metrics are served on /metrics by kerno-otel run; "
        "this command serves nothing\n"
        "kerno-otel: telemetry: traces to otlp (grpc)\n"
        "kerno-otel: telemetry: metrics to otlp (grpc)\n"
    )
    assert len(receiver.metric_requests) == 1
    [point] = receiver.metrics()["kerno.doctor.cycle.duration"].histogram.data_points
    assert (point.count, point.sum) == (1, 1.5)
    [span] = receiver.spans()
    log.close()
    [record] = [r for r in stream_records(tmp_path / "audit.jsonl") if r["type"] == "bpf.load"]
    assert (record["trace_id"], record["span_id"]) == (span.trace_id.hex(), span.span_id.hex())


def test_shutdown_stops_waiting_for_a_collector_that_does_not_answer(
    log: AuditLog, receiver: TelemetryReceiver, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = TelemetrySettings(traces=("otlp",), endpoint=receiver.endpoint)
    telemetry = start_telemetry(settings, log, stderr=io.StringIO(), once=True)
    with telemetry.tracer.start_as_current_span("held"):
        pass
    receiver.gate.clear()  # the collector takes the request and never answers

    telemetry.shutdown(timeout=0.2)

    # Returned, though the export it started cannot have completed: it is held, and the
    # thread shutting the tracer down is still in it.
    assert [t for t in threading.enumerate() if t.name == "kerno-telemetry-stop"]
    assert wait_until(receiver.holding.is_set)
    assert receiver.trace_requests == []
    assert capsys.readouterr().err == (
        "kerno-otel: telemetry: stopped waiting for the last export after 0.2 s: "
        "spans or metrics not sent by then are lost\n"
    )


def test_the_resource_the_sdk_adds_is_scrubbed_and_the_audit_keys_kept(
    log: AuditLog, receiver: TelemetryReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Standard variables an operator may set: the SDK's process detector (the pid, the
    # parent's, the executable's path, the command) and attributes of their own.
    monkeypatch.setenv("OTEL_EXPERIMENTAL_RESOURCE_DETECTORS", "process")
    monkeypatch.setenv(
        "OTEL_RESOURCE_ATTRIBUTES",
        "deployment.environment=prod,host.ip=10.2.3.4,note=key%20/home/bob/.ssh/id_rsa",
    )
    settings = TelemetrySettings(traces=("otlp",), metrics=("otlp",), endpoint=receiver.endpoint)
    telemetry = start_telemetry(settings, log, stderr=io.StringIO(), once=True)
    with telemetry.tracer.start_as_current_span("kerno.doctor.cycle"):
        pass
    telemetry.instruments.cycle_duration.record(1.0, {"kerno.doctor.outcome": "completed"})
    telemetry.shutdown()

    resources = [
        {kv.key: kv.value for kv in r.resource.attributes}
        for request in receiver.trace_requests
        for r in request.resource_spans
    ] + [
        {kv.key: kv.value for kv in r.resource.attributes}
        for request in receiver.metric_requests
        for r in request.resource_metrics
    ]
    assert len(resources) == 2
    for attributes in resources:
        shown = {key: str(value).strip() for key, value in attributes.items()}
        assert shown["process.pid"] == 'string_value: "[REDACTED:pid]"'
        assert shown["process.parent_pid"] == 'string_value: "[REDACTED:pid]"'
        assert shown["host.ip"] == 'string_value: "[REDACTED:ip]"'
        assert shown["deployment.environment"] == 'string_value: "prod"'
        text = repr(attributes)
        for raw in (str(os.getpid()), "10.2.3.4", "id_rsa", "/bob/", sys.executable):
            assert raw not in text
        # The audit log's three keys, exact: a span joins its records on them.
        for key, value in log.resource.items():
            assert attributes[key].string_value == value
