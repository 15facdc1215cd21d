"""kerno_otel/telemetry/redact.py: no raw IP, PID, path or secret leaves in a span."""

from __future__ import annotations

from pathlib import Path

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from kerno_otel.audit.log import AuditLog
from kerno_otel.config import AuditConfig
from kerno_otel.telemetry.redact import RedactingSpanExporter

LEAKS = ("10.1.2.3", "4242", "/home/alice", "hunter2", "sk-ant-api03-abcdefghijklmnop")


def test_every_part_of_a_span_is_scrubbed_by_the_audit_redactor(tmp_path: Path) -> None:
    memory = InMemorySpanExporter()
    with AuditLog(AuditConfig(file_path=str(tmp_path / "a.jsonl"), pipeline="thread")) as log:
        provider = TracerProvider()
        scrub = lambda text: log.redactor.redact_text(text)[0]  # noqa: E731
        provider.add_span_processor(SimpleSpanProcessor(RedactingSpanExporter(memory, scrub)))
        tracer = provider.get_tracer("acme")
        with tracer.start_as_current_span("load /home/alice/prog.o") as span:
            span.set_attribute("acme.peer", "connect to 10.1.2.3 failed")
            span.set_attribute("process.pid", 4242)
            span.set_attribute("acme.target_pid", 4242)
            span.set_attribute("client.address", "10.1.2.3")
            span.set_attribute("acme.args", ["password=hunter2", "ok"])
            span.set_attribute("acme.count", 3)
            span.add_event("retry", {"acme.key": "sk-ant-api03-abcdefghijklmnop"})
            span.set_status(StatusCode.ERROR, "open /home/alice/x: denied")
        provider.shutdown()
    [exported] = memory.get_finished_spans()
    attributes = dict(exported.attributes or {})
    assert exported.name == "load /home/[REDACTED:path]"
    assert attributes["process.pid"] == "[REDACTED:pid]"
    assert attributes["acme.target_pid"] == "[REDACTED:pid]"
    assert attributes["client.address"] == "[REDACTED:ip]"
    assert attributes["acme.count"] == 3
    assert attributes["acme.args"][1] == "ok"
    text = repr((exported.name, attributes, exported.events, exported.status.description))
    for leak in LEAKS:
        assert leak not in text, leak
    # The span's identity is untouched: the records emitted in it still point at it.
    assert exported.context is not None and exported.context.is_valid


def test_metric_attributes_are_scrubbed_on_every_instrument(tmp_path: Path) -> None:
    from opentelemetry.metrics import Observation
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    from kerno_otel.telemetry import Telemetry

    reader = InMemoryMetricReader()
    with AuditLog(AuditConfig(file_path=str(tmp_path / "a.jsonl"), pipeline="thread")) as log:
        telemetry = Telemetry(
            meter_provider=MeterProvider(metric_readers=[reader]),
            scrub=lambda text: log.redactor.redact_text(text)[0],
        )
        meter = telemetry.meter  # what a plugin gets as context.meter
        leaky = {"acme.peer": "10.1.2.3", "process.pid": 4242, "acme.file": "/home/alice/x"}
        meter.create_counter("acme.c").add(1, leaky)
        meter.create_up_down_counter("acme.u").add(1, leaky)
        meter.create_histogram("acme.h").record(1.0, leaky)
        meter.create_gauge("acme.g").set(1.0, leaky)
        meter.create_observable_gauge("acme.o", [lambda options: [Observation(1, leaky)]])
        data = reader.get_metrics_data()
    assert data is not None
    seen = {
        m.name: dict(p.attributes or {})
        for rm in data.resource_metrics
        for sm in rm.scope_metrics
        for m in sm.metrics
        for p in m.data.data_points
    }
    clean = {
        "acme.peer": "[REDACTED:ip]",
        "process.pid": "[REDACTED:pid]",
        "acme.file": "/home/[REDACTED:path]",
    }
    assert seen == {name: clean for name in ("acme.c", "acme.u", "acme.h", "acme.g", "acme.o")}


def test_attribute_keys_and_id_like_keys_do_not_carry_what_values_may_not(tmp_path: Path) -> None:
    memory = InMemorySpanExporter()
    with AuditLog(AuditConfig(file_path=str(tmp_path / "a.jsonl"), pipeline="thread")) as log:
        provider = TracerProvider()
        scrub = lambda text: log.redactor.redact_text(text)[0]  # noqa: E731
        provider.add_span_processor(SimpleSpanProcessor(RedactingSpanExporter(memory, scrub)))
        with provider.get_tracer("acme").start_as_current_span("x") as span:
            span.set_attribute("acme./home/alice/key", "v")
            span.set_attribute("peer 10.1.2.3", 1)
            span.set_attribute("acme.pids", [4242, 4343])
            span.set_attribute("acme.process_id", 4242)
            span.set_attribute("acme.peer_ips", ["10.1.2.3"])
            span.set_attribute("acme.socket.address", "fd00::1")
            span.set_attribute("acme.count", 3)
            span.add_event("e", {"acme.ppid": 4242, "token=hunter2": True})
        provider.shutdown()
    [exported] = memory.get_finished_spans()
    attributes = dict(exported.attributes or {})
    text = repr((attributes, exported.events))
    for leak in (*LEAKS, "4343", "fd00::1"):
        assert leak not in text, leak
    assert attributes["acme.pids"] == "[REDACTED:pid]"
    assert attributes["acme.process_id"] == "[REDACTED:pid]"
    assert attributes["acme.count"] == 3


def test_generator_callbacks_are_scrubbed_too(tmp_path: Path) -> None:
    from collections.abc import Generator

    from opentelemetry.metrics import CallbackOptions, Observation
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    from kerno_otel.telemetry import Telemetry

    def observations() -> Generator[list[Observation], CallbackOptions, None]:
        options = yield []
        while True:
            assert options is not None
            options = yield [Observation(1, {"acme.peer": "10.1.2.3", "pid": 4242})]

    reader = InMemoryMetricReader()
    with AuditLog(AuditConfig(file_path=str(tmp_path / "a.jsonl"), pipeline="thread")) as log:
        telemetry = Telemetry(
            meter_provider=MeterProvider(metric_readers=[reader]),
            scrub=lambda text: log.redactor.redact_text(text)[0],
        )
        telemetry.meter.create_observable_counter("acme.gen", [observations()])
        data = reader.get_metrics_data()
    assert data is not None
    [point] = [
        dict(p.attributes or {})
        for rm in data.resource_metrics
        for sm in rm.scope_metrics
        for m in sm.metrics
        if m.name == "acme.gen"
        for p in m.data.data_points
    ]
    assert point == {"acme.peer": "[REDACTED:ip]", "pid": "[REDACTED:pid]"}
