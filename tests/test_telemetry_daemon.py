"""The daemon's own traces and metrics, end to end: a real ``kerno-otel run`` with only the
standard ``OTEL_*`` variables set, exporting to a loopback OTLP/gRPC receiver, with a
forced finding and the analyzer on a loopback LLM server."""

from __future__ import annotations

import http.client
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import QUIET_THRESHOLDS
from otlp_receivers import TelemetryReceiver
from test_analyzer import API_KEY, serve
from test_daemon import Daemon
from test_plugin_auth import samples

TOKEN = "telemetry-test-token-0123"
PLUGINS = "lifecycle,auth,analyzer,procfs,doctor"
CHILDREN = {"kerno.doctor.source", "kerno.doctor.rule", "kerno.doctor.sink", "chat claude-test"}


@pytest.fixture
def llm() -> Iterator[Any]:
    yield from serve()


@pytest.fixture
def receiver() -> Iterator[TelemetryReceiver]:
    running = TelemetryReceiver().start()
    yield running
    running.stop()


@pytest.fixture
def daemons() -> Iterator[list[Daemon]]:
    running: list[Daemon] = []
    yield running
    for daemon in running:  # a failed test still ends its daemon
        if daemon.proc.poll() is None:
            daemon.proc.kill()
            daemon.proc.wait()


def config(llm: Any) -> str:
    # oom_memory_pct 0: any memory use is CRITICAL, so the one cycle has a finding to
    # send and explain. interval 1h: one cycle per run, so /metrics and the OTLP export
    # see the same doctor and analyzer counts.
    return (
        "http:\n  listen: 127.0.0.1:0\n"
        f"  bearer_token: {TOKEN}\n"
        "doctor:\n  duration: 1s\n  interval: 1h\n  thresholds:\n    oom_memory_pct: 0\n"
        + QUIET_THRESHOLDS
        + "ai:\n  enabled: true\n  provider: anthropic\n  model: claude-test\n"
        f"  api_key: {API_KEY}\n  endpoint: {llm.url}\n  timeout: 5s\n"
    )


def standard_env(monkeypatch: pytest.MonkeyPatch, receiver: TelemetryReceiver) -> None:
    for name in ("OTEL_TRACES_EXPORTER", "OTEL_METRICS_EXPORTER"):
        monkeypatch.setenv(name, "otlp")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.endpoint)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_INSECURE", "true")
    # The last export, at shutdown, is the one compared; none before it.
    monkeypatch.setenv("OTEL_METRIC_EXPORT_INTERVAL", "3600000")
    monkeypatch.setenv("OTEL_SERVICE_NAME", "kerno-test")


def scrape(daemon: Daemon) -> str:
    line = daemon.expect("kerno-otel: http listening on ")
    host, _, port = line.split()[-1].rpartition(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    conn.request("GET", "/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
    response = conn.getresponse()
    assert response.status == 200
    text = response.read().decode()
    conn.close()
    return text


def test_a_run_exports_the_cycle_trace_linked_to_its_records(
    tmp_path: Path,
    llm: Any,
    receiver: TelemetryReceiver,
    monkeypatch: pytest.MonkeyPatch,
    daemons: list[Daemon],
) -> None:
    standard_env(monkeypatch, receiver)
    daemon = Daemon(tmp_path, config(llm), PLUGINS)
    daemons.append(daemon)
    # What the variables amounted to, said once at start.
    daemon.expect("kerno-otel: telemetry: traces to otlp (grpc)\n")
    daemon.expect("kerno-otel: telemetry: metrics to otlp (grpc)\n")
    [ai_call] = daemon.wait_for("ai.call")
    text = scrape(daemon)
    daemon.config.write_text(daemon.config.read_text().replace("timeout: 5s", "timeout: 6s"))
    daemon.proc.send_signal(signal.SIGHUP)
    [reload] = daemon.wait_for("config.reload")
    assert daemon.stop() == 0
    records = daemon.records()
    receiver.wait_for(lambda r: any(s.name == "kerno.doctor.cycle" for s in r.spans()))
    receiver.wait_for(lambda r: "gen_ai.client.token.usage" in r.metrics())

    spans = receiver.spans()
    by_id = {s.span_id.hex(): s for s in spans}
    [cycle] = [s for s in spans if s.name == "kerno.doctor.cycle"]
    assert cycle.parent_span_id == b""
    children = [s for s in spans if s.parent_span_id == cycle.span_id]
    assert {s.name for s in children} == CHILDREN
    assert all(s.trace_id == cycle.trace_id for s in children)
    rules = [s for s in children if s.name == "kerno.doctor.rule"]
    assert len(rules) > 5  # one per rule kerno ships

    # Every finding.emit and ai.call record names the span it was emitted in.
    linked = [r for r in records if r["type"] in ("finding.emit", "ai.call")]
    emitted = [r for r in linked if r["type"] == "finding.emit"]
    assert emitted and [r["type"] for r in linked] == ["finding.emit"] * len(emitted) + ["ai.call"]
    for record in linked:
        span = by_id[record["span_id"]]
        assert record["trace_id"] == span.trace_id.hex() == cycle.trace_id.hex()
        expected = "kerno.doctor.sink" if record["type"] == "finding.emit" else "chat claude-test"
        assert span.name == expected

    # A reload is a span of its own, and its record carries it.
    reloaded = by_id[reload["span_id"]]
    assert (reloaded.name, reloaded.parent_span_id) == ("kerno.config.reload", b"")
    assert reload["trace_id"] == reloaded.trace_id.hex()

    # The scrape is a server span with its auth outcome (and no client address).
    [served] = [s for s in spans if s.name == "GET /metrics"]
    served_attributes = {kv.key: kv.value for kv in served.attributes}
    assert served_attributes["kerno.auth.outcome"].string_value == "authorized"
    assert served_attributes["http.response.status_code"].int_value == 200
    assert served.kind == 2  # SPAN_KIND_SERVER

    chat = by_id[ai_call["span_id"]]
    attributes = {kv.key: kv.value for kv in chat.attributes}
    assert attributes["gen_ai.system"].string_value == "anthropic"
    assert attributes["gen_ai.request.model"].string_value == "claude-test"
    assert (
        attributes["gen_ai.usage.input_tokens"].int_value == ai_call["details"]["tokens"]["input"]
    )
    assert (
        attributes["gen_ai.usage.output_tokens"].int_value == ai_call["details"]["tokens"]["output"]
    )
    assert chat.kind == 3  # SPAN_KIND_CLIENT

    # The same resource as the audit records.
    resource = records[0]["resource"]
    for exported in receiver.span_resources():
        assert {k: exported[k] for k in resource} == resource
    assert resource["service.name"] == "kerno-test"

    # Nothing raw in any span: no address, no pid, no path of the host.
    for span in spans:
        for kv in span.attributes:
            value = kv.value.string_value
            assert "127.0.0.1" not in value and "/home/" not in value, (span.name, kv)

    # /metrics (parsed by prometheus_client) agrees with the OTLP export of the run.
    scraped = samples(text)
    exported = receiver.metrics()
    tokens = exported["gen_ai.client.token.usage"].histogram.data_points
    assert len(tokens) == 2  # input and output
    for point in tokens:
        kind = next(kv.value.string_value for kv in point.attributes if kv.key.endswith("type"))
        keys = {
            k: v
            for k, v in ((a.key.replace(".", "_"), a.value.string_value) for a in point.attributes)
        }
        assert scraped[("gen_ai_client_token_usage_sum", tuple(sorted(keys.items())))] == point.sum
        assert point.sum == ai_call["details"]["tokens"][kind]
    [cycles] = exported["kerno.doctor.cycle.duration"].histogram.data_points
    assert (
        scraped[
            ("kerno_doctor_cycle_duration_seconds_count", (("kerno_doctor_outcome", "completed"),))
        ]
        == cycles.count
        == 1
    )
    assert scraped[
        ("kerno_doctor_cycle_duration_seconds_sum", (("kerno_doctor_outcome", "completed"),))
    ] == pytest.approx(cycles.sum)
    [delivered] = exported["kerno.doctor.deliveries"].sum.data_points
    key = (("kerno_doctor_outcome", "delivered"), ("kerno_doctor_sink", "log"))
    assert scraped[("kerno_doctor_deliveries_total", key)] == delivered.as_int == len(emitted)
    # The pipeline's counters reach OTLP from the worker's stats: the final export
    # holds every record the run wrote.
    [written] = exported["kerno.audit.records.written"].sum.data_points
    assert written.as_int == len(records)
    assert scraped[("kerno_audit_records_written_total", ())] <= written.as_int
