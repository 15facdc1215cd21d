"""kerno_otel/telemetry: settings from OTEL_* and the config, providers, instruments, and the
ids an audit record takes from the active span."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from helpers import stream_records
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider

from kerno_otel.audit.log import AuditLog
from kerno_otel.config import AuditConfig, ConfigError
from kerno_otel.telemetry import Telemetry, TelemetrySettings, build_telemetry, read_settings
from kerno_otel.telemetry.instruments import Instruments

RESOURCE = {"service.name": "kerno", "service.instance.id": "i-1", "host.name": "h"}


# --- settings -----------------------------------------------------------------------------------


def test_off_unless_asked() -> None:
    assert read_settings({}, {}) == TelemetrySettings()
    assert not read_settings({}, {}).tracing


def test_standard_variables() -> None:
    env = {
        "OTEL_TRACES_EXPORTER": "otlp,console",
        "OTEL_METRICS_EXPORTER": "prometheus, otlp",
        "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
        "OTEL_EXPORTER_OTLP_METRICS_PROTOCOL": "http/protobuf",
    }
    assert read_settings({}, env) == TelemetrySettings(
        traces=("otlp", "console"),
        metrics=("prometheus", "otlp"),
        traces_protocol="grpc",
        metrics_protocol="http/protobuf",
    )
    assert read_settings({}, {**env, "OTEL_SDK_DISABLED": "true"}) == TelemetrySettings()


def test_the_config_section_wins_over_the_environment() -> None:
    section = {
        "traces_exporter": "none",
        "metrics_exporter": "otlp",
        "endpoint": "http://127.0.0.1:4317",
        "protocol": "grpc",
        "metric_export_interval": "15s",
    }
    env = {"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf"}
    assert read_settings(section, env) == TelemetrySettings(
        traces=(),
        metrics=("otlp",),
        metrics_protocol="grpc",
        endpoint="http://127.0.0.1:4317",
        interval_ms=15000.0,
    )


@pytest.mark.parametrize(
    ("section", "env", "message"),
    [
        (
            {},
            {"OTEL_TRACES_EXPORTER": "jaeger"},
            "OTEL_TRACES_EXPORTER: unknown exporter 'jaeger' (known: otlp, console, none)",
        ),
        (
            {"metrics_exporter": "statsd"},
            {},
            "telemetry.metrics_exporter: unknown exporter 'statsd' "
            "(known: otlp, console, prometheus, none)",
        ),
        (
            {},
            {"OTEL_TRACES_EXPORTER": "console", "OTEL_TRACES_SAMPLER": "sometimes"},
            "OTEL_TRACES_SAMPLER: unknown sampler 'sometimes' (known: always_on, always_off, "
            "traceidratio, parentbased_always_on, parentbased_always_off, "
            "parentbased_traceidratio)",
        ),
        (
            {},
            {
                "OTEL_TRACES_EXPORTER": "console",
                "OTEL_TRACES_SAMPLER": "traceidratio",
                "OTEL_TRACES_SAMPLER_ARG": "1.5",
            },
            "OTEL_TRACES_SAMPLER_ARG: expected a ratio from 0 to 1, got '1.5'",
        ),
        (
            {},
            {"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "thrift"},
            "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL: expected one of grpc, http/protobuf, got 'thrift'",
        ),
        (
            {"metric_export_interval": "0s"},
            {},
            "telemetry.metric_export_interval: expected a duration > 0",
        ),
    ],
)
def test_bad_settings_name_the_key(
    section: dict[str, Any], env: dict[str, str], message: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        read_settings(section, env)
    assert str(caught.value) == message


# --- providers ------------------------------------------------------------------------------------


def test_off_is_a_no_op() -> None:
    telemetry = Telemetry.off()
    with telemetry.tracer.start_as_current_span("x") as span:
        assert not span.get_span_context().is_valid
    assert telemetry.prometheus_text() is None
    assert not telemetry.tracing
    telemetry.observe_bpf_lost("tcp_monitor", lambda: 3)  # no error
    telemetry.shutdown()
    telemetry.shutdown()


def test_prometheus_text_carries_the_resource_and_the_pipeline() -> None:
    telemetry = build_telemetry(
        read_settings({}, {}),
        resource=RESOURCE,
        scrub=lambda text: text,
        serve_metrics=True,
        stats=lambda: {"records_written": 7, "records_dropped": {"queue_full": 2}},
    )
    telemetry.observe_bpf_lost("tcp_monitor", lambda: 3)
    telemetry.observe_bpf_lost("closed", lambda: 1 // 0)  # a program that cannot say: left out
    text = (telemetry.prometheus_text() or b"").decode()
    telemetry.shutdown()
    assert 'service_instance_id="i-1"' in text  # target_info: the audit records' resource
    samples = [line for line in text.splitlines() if not line.startswith("#")]
    lines = {line.split(" ")[0].split("{")[0]: line for line in samples}
    assert lines["kerno_audit_records_written_total"].endswith(" 7.0")
    assert 'kerno_audit_drop_reason="queue_full"' in lines["kerno_audit_records_dropped_total"]
    assert lines["kerno_bpf_lost_events_total"].endswith(" 3.0")
    assert 'kerno_bpf_program="tcp_monitor"' in lines["kerno_bpf_lost_events_total"]
    assert 'kerno_bpf_program="closed"' not in text


def test_one_stats_call_serves_every_pipeline_instrument() -> None:
    calls: list[int] = []

    def stats() -> dict[str, Any]:
        calls.append(1)
        return {"records_written": 5, "queue_depth": 2, "redactions": {"ip": 4}}

    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    Instruments(provider.get_meter("t")).observe_pipeline(stats)
    data = reader.get_metrics_data()
    assert data is not None
    points = {
        m.name: [(dict(p.attributes or {}), p.value) for p in m.data.data_points]
        for rm in data.resource_metrics
        for sm in rm.scope_metrics
        for m in sm.metrics
    }
    provider.shutdown()
    assert calls == [1]
    assert points["kerno.audit.records.written"] == [({}, 5)]
    assert points["kerno.audit.queue.depth"] == [({}, 2)]
    assert points["kerno.audit.redactions"] == [({"kerno.redaction.kind": "ip"}, 4)]


def test_a_failing_stats_call_never_raises_into_a_scrape() -> None:
    def stats() -> dict[str, Any]:
        raise RuntimeError("worker gone")

    telemetry = build_telemetry(
        read_settings({}, {}), resource=RESOURCE, scrub=str, serve_metrics=True, stats=stats
    )
    assert b"kerno_audit_records_written" not in (telemetry.prometheus_text() or b"")
    telemetry.shutdown()


# --- records take the active span's ids -----------------------------------------------------------


@pytest.mark.parametrize("pipeline", ["thread", "process"])
def test_a_record_emitted_in_a_span_carries_its_ids(tmp_path: Path, pipeline: str) -> None:
    path = tmp_path / "audit.jsonl"
    tracer = TracerProvider().get_tracer("t")
    with AuditLog(AuditConfig(file_path=str(path), pipeline=pipeline)) as log:
        log.emit("bpf.load", details={"program": "outside", "attach": [], "success": True})
        with tracer.start_as_current_span("kerno.bpf.load") as span:
            log.emit("bpf.load", details={"program": "inside", "attach": [], "success": True})
            # An id the producer gives wins over the active span's.
            log.emit(
                "bpf.load",
                details={"program": "given", "attach": [], "success": True},
                trace_id=0xABC,
                span_id=0xDEF,
            )
        assert log.flush()
    records = {r["details"]["program"]: r for r in stream_records(path) if r["type"] == "bpf.load"}
    context = span.get_span_context()
    assert "trace_id" not in records["outside"] and "span_id" not in records["outside"]
    assert records["inside"]["trace_id"] == f"{context.trace_id:032x}"
    assert records["inside"]["span_id"] == f"{context.span_id:016x}"
    assert (records["given"]["trace_id"], records["given"]["span_id"]) == (
        f"{0xABC:032x}",
        f"{0xDEF:016x}",
    )


def test_a_record_in_a_span_the_sampler_dropped_carries_no_ids(tmp_path: Path) -> None:
    # OTEL_TRACES_SAMPLER=always_off (or a ratio) leaves spans no exporter ever sees: a
    # record naming one would point at nothing, and the format has no sampled flag.
    from opentelemetry.sdk.trace.sampling import ALWAYS_OFF

    path = tmp_path / "audit.jsonl"
    tracer = TracerProvider(sampler=ALWAYS_OFF).get_tracer("t")
    with AuditLog(AuditConfig(file_path=str(path), pipeline="thread")) as log:
        with tracer.start_as_current_span("kerno.bpf.load") as span:
            assert span.get_span_context().is_valid  # the SDK still made ids for it
            log.emit("bpf.load", details={"program": "p", "attach": [], "success": True})
        assert log.flush()
    [record] = [r for r in stream_records(path) if r["type"] == "bpf.load"]
    assert "trace_id" not in record and "span_id" not in record


def test_records_in_a_span_still_go_to_the_worker_uncleaned(tmp_path: Path) -> None:
    # A 128-bit trace id is past a JSON integer: records emitted inside a span fell back
    # to cleaning on the emitting thread (2 to 4 times the emit cost) until the RAW frame
    # learnt to carry it as hex.
    path = tmp_path / "audit.jsonl"
    tracer = TracerProvider().get_tracer("t")
    with AuditLog(AuditConfig(file_path=str(path), pipeline="process")) as log:
        with tracer.start_as_current_span("s") as span:
            for _ in range(3):
                log.emit("ai.call", details=_ai_call("connect 10.1.2.3 refused"))
        assert log.flush()
        cleaned_here = dict(log.redactor.counts)
    assert cleaned_here == {}  # the emitting thread redacted nothing: the worker did
    records = [r for r in stream_records(path) if r["type"] == "ai.call"]
    assert [r["trace_id"] for r in records] == [f"{span.get_span_context().trace_id:032x}"] * 3
    assert [r["details"]["error"] for r in records] == ["connect [REDACTED:ip] refused"] * 3


def _ai_call(error: str) -> dict[str, Any]:
    return {
        "provider": "anthropic",
        "model": "m",
        "cache": "miss",
        "tokens": {"input": 1, "output": 1},
        "prompt_size": 1,
        "response_size": 1,
        "redactions": {},
        "duration_ms": 1.0,
        "privacy_mode": "summary",
        "cycle_id": "cycle-20261127-180000",
        "error": error,
    }


def test_the_section_is_checked_at_load(tmp_path: Path) -> None:
    from kerno_otel.config import load_config

    good = tmp_path / "good.yaml"
    good.write_text("telemetry:\n  traces_exporter: otlp\n  metric_export_interval: 10s\n")
    section = load_config(good, env={}).section("telemetry")
    assert read_settings(section, {}).traces == ("otlp",)
    bad = tmp_path / "bad.yaml"
    bad.write_text("telemetry:\n  protocol: thrift\n")
    with pytest.raises(ConfigError) as caught:
        load_config(bad, env={})
    assert str(caught.value) == (
        f"{bad}:2: telemetry.protocol: expected one of grpc, http/protobuf, got 'thrift'"
    )
