"""The analyzer's GenAI spans and metrics, against a loopback provider speaking Anthropic's API."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kerno_otel_plugins import analyzer
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode
from test_analyzer import CYCLE, Server, ai_calls, ai_config, serve

from kerno_otel import Telemetry
from kerno_otel.audit.log import AuditLog
from kerno_otel.config import AuditConfig
from kerno_otel.findings import Finding, Signals

FINDINGS = [Finding("oom_imminent", "CRITICAL", "Memory almost exhausted", {"used_pct": 97})]


@pytest.fixture
def server() -> Iterator[Server]:
    yield from serve()


def histograms(reader: InMemoryMetricReader) -> dict[str, list[Any]]:
    data = reader.get_metrics_data()
    assert data is not None
    return {
        m.name: list(m.data.data_points)
        for rm in data.resource_metrics
        for sm in rm.scope_metrics
        for m in sm.metrics
    }


def test_calls_are_genai_spans_with_tokens_and_metrics(server: Server, tmp_path: Path) -> None:
    spans = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(spans))
    reader = InMemoryMetricReader()
    telemetry = Telemetry(
        tracer_provider=tracer_provider, meter_provider=MeterProvider(metric_readers=[reader])
    )
    with AuditLog(AuditConfig(file_path=str(tmp_path / "a.jsonl"))) as log:
        built = analyzer.build(log, ai_config(server, "anthropic"), env={})
        built.telemetry = telemetry
        built.analyze(CYCLE, FINDINGS, Signals(1.0, {}))  # a miss: the provider answers
        built.analyze(CYCLE, FINDINGS, Signals(1.0, {}))  # a hit: nobody is asked
        server.status = 503
        other = Finding("fd_leak", "WARNING", "File descriptors growing", {})
        built.analyze("cycle-20261127-180200", [other], Signals(1.0, {}))  # not cached
        built.close()
        records = ai_calls(log)
    miss, hit, failed = spans.get_finished_spans()
    assert {s.name for s in (miss, hit, failed)} == {"chat anthropic-model"}
    assert dict(miss.attributes or {}) == {
        "gen_ai.operation.name": "chat",
        "gen_ai.system": "anthropic",
        "gen_ai.request.model": "anthropic-model",
        "kerno.doctor.cycle_id": CYCLE,
        "gen_ai.usage.input_tokens": 11,
        "gen_ai.usage.output_tokens": 7,
        "kerno.ai.cache": "miss",
    }
    assert (hit.attributes or {})["kerno.ai.cache"] == "hit"
    assert failed.status.status_code == StatusCode.ERROR
    assert (failed.attributes or {})["error.type"] == records[2]["details"]["error"].split(":")[0]
    # Each ai.call record is the one emitted in its span.
    for record, span in zip(records, (miss, hit, failed), strict=True):
        assert span.context is not None
        assert record["span_id"] == f"{span.context.span_id:016x}"
    points = histograms(reader)
    # Two calls reached the provider (the miss, the failure); the hit did not.
    assert sum(p.count for p in points["gen_ai.client.operation.duration"]) == 2
    tokens = {
        dict(p.attributes)["gen_ai.token.type"]: p.sum for p in points["gen_ai.client.token.usage"]
    }
    assert tokens == {"input": 11, "output": 7}
    telemetry.shutdown()
