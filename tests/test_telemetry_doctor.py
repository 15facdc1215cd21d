"""``kerno-otel doctor``'s own traces and metrics, end to end: the real command as a process,
with only the standard ``OTEL_*`` variables set, exporting to a loopback OTLP/gRPC receiver,
with a forced finding and the analyzer on a loopback LLM server.

Every assertion on what was exported is made after the process has exited, with no wait:
what the command did not send before exiting, it never sends.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import QUIET_THRESHOLDS, stream_records
from otlp_receivers import TelemetryReceiver
from test_analyzer import API_KEY, serve

PLUGINS = "analyzer,procfs,doctor,bpf"
CHILDREN = {"kerno.doctor.source", "kerno.doctor.rule", "kerno.doctor.sink", "chat claude-test"}


@pytest.fixture
def llm() -> Iterator[Any]:
    yield from serve()


@pytest.fixture
def receiver() -> Iterator[TelemetryReceiver]:
    running = TelemetryReceiver().start()
    yield running
    running.stop()


def config(llm: Any) -> str:
    # oom_memory_pct 0: any memory use is CRITICAL, so the cycle has a finding to send
    # and explain.
    return (
        "doctor:\n  thresholds:\n    oom_memory_pct: 0\n"
        + QUIET_THRESHOLDS
        + "ai:\n  enabled: true\n  provider: anthropic\n  model: claude-test\n"
        f"  api_key: {API_KEY}\n  endpoint: {llm.url}\n  timeout: 5s\n"
    )


def standard_env(receiver: TelemetryReceiver) -> dict[str, str]:
    return {
        "OTEL_TRACES_EXPORTER": "otlp",
        "OTEL_METRICS_EXPORTER": "otlp",
        "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
        "OTEL_EXPORTER_OTLP_INSECURE": "true",
        # A one-shot command exports its metrics once, at exit, whatever the interval.
        "OTEL_METRIC_EXPORT_INTERVAL": "50",
        "OTEL_SERVICE_NAME": "kerno-test",
    }


def doctor(
    tmp_path: Path, extra_env: dict[str, str], config_text: str, *, python: tuple[str, ...] = ()
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KERNO_", "OTEL_"))}
    env["KERNO_AUDIT_FILE_PATH"] = str(tmp_path / "audit" / "kerno-audit.jsonl")
    env["KERNO_OTEL_PLUGINS"] = PLUGINS
    env.update(extra_env)
    (tmp_path / "kerno.yaml").write_text(config_text)
    args = ("doctor", "--config", str(tmp_path / "kerno.yaml"), "--duration", "1s", "-o", "json")
    return subprocess.run(
        [sys.executable, *(python or ("-m", "kerno_otel")), *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        check=False,
        timeout=120,
    )


def records(tmp_path: Path) -> list[dict[str, Any]]:
    return stream_records(tmp_path / "audit" / "kerno-audit.jsonl")


def test_doctor_exports_the_cycle_trace_linked_to_its_records(
    tmp_path: Path, llm: Any, receiver: TelemetryReceiver
) -> None:
    result = doctor(tmp_path, standard_env(receiver), config(llm))
    assert result.returncode == 0, result.stderr
    said = [line for line in result.stderr.splitlines() if "otel: telemetry" in line]
    assert said == [
        "kerno-otel: telemetry: traces to otlp (grpc)",
        "kerno-otel: telemetry: metrics to otlp (grpc)",
    ]
    written = records(tmp_path)
    cycle_id = json.loads(result.stdout)["cycle_id"]

    spans = receiver.spans()
    by_id = {s.span_id.hex(): s for s in spans}
    [cycle] = [s for s in spans if s.name == "kerno.doctor.cycle"]
    assert cycle.parent_span_id == b""
    cycle_attributes = {kv.key: kv.value for kv in cycle.attributes}
    assert cycle_attributes["kerno.doctor.cycle_id"].string_value == cycle_id
    assert cycle_attributes["kerno.doctor.outcome"].string_value == "completed"
    children = [s for s in spans if s.parent_span_id == cycle.span_id]
    assert {s.name for s in children} == CHILDREN
    assert all(s.trace_id == cycle.trace_id for s in children)
    assert len([s for s in children if s.name == "kerno.doctor.rule"]) > 5

    # Every finding.emit and ai.call record names the span it was emitted in.
    linked = [r for r in written if r["type"] in ("finding.emit", "ai.call")]
    emitted = [r for r in linked if r["type"] == "finding.emit"]
    assert emitted and [r["type"] for r in linked] == ["finding.emit"] * len(emitted) + ["ai.call"]
    for record in linked:
        span = by_id[record["span_id"]]
        assert record["trace_id"] == span.trace_id.hex() == cycle.trace_id.hex()
        expected = "kerno.doctor.sink" if record["type"] == "finding.emit" else "chat claude-test"
        assert span.name == expected
        assert record["details"]["cycle_id"] == cycle_id
    ai_call = linked[-1]
    chat = by_id[ai_call["span_id"]]
    chat_attributes = {kv.key: kv.value for kv in chat.attributes}
    assert chat.kind == 3  # SPAN_KIND_CLIENT
    assert chat_attributes["gen_ai.system"].string_value == "anthropic"
    assert chat_attributes["gen_ai.request.model"].string_value == "claude-test"
    assert (
        chat_attributes["gen_ai.usage.input_tokens"].int_value
        == ai_call["details"]["tokens"]["input"]
    )

    # Each BPF load attempt (loaded or not on this host) is a root span of its own,
    # and its bpf.load record carries it.
    loads = [r for r in written if r["type"] == "bpf.load"]
    assert loads
    for record in loads:
        span = by_id[record["span_id"]]
        attributes = {kv.key: kv.value for kv in span.attributes}
        assert (span.name, span.parent_span_id) == ("kerno.bpf.load", b"")
        assert attributes["kerno.bpf.program"].string_value == record["details"]["program"]
        assert attributes["kerno.bpf.success"].bool_value == record["details"]["success"]
    assert len([s for s in spans if s.name == "kerno.bpf.load"]) == len(loads)

    # Spans and records name the same resource.
    resource = written[0]["resource"]
    for exported in receiver.span_resources():
        assert {k: exported[k] for k in resource} == resource
    assert resource["service.name"] == "kerno-test"

    # The metrics, exported once, at exit, after the log closed: the final counts.
    assert len(receiver.metric_requests) == 1
    exported = receiver.metrics()
    [duration] = exported["kerno.doctor.cycle.duration"].histogram.data_points
    assert duration.count == 1 and duration.sum >= 1.0  # the 1 s window is in it
    [delivered] = exported["kerno.doctor.deliveries"].sum.data_points
    assert delivered.as_int == len(emitted)
    tokens = exported["gen_ai.client.token.usage"].histogram.data_points
    assert sorted(point.sum for point in tokens) == sorted(ai_call["details"]["tokens"].values())
    [latency] = exported["gen_ai.client.operation.duration"].histogram.data_points
    assert latency.count == 1
    [records_written] = exported["kerno.audit.records.written"].sum.data_points
    assert records_written.as_int == len(written)


@pytest.mark.parametrize(
    ("env", "telemetry", "error"),
    [
        (
            {"OTEL_TRACES_EXPORTER": "zipkin"},
            "",
            "OTEL_TRACES_EXPORTER: unknown exporter 'zipkin' (known: otlp, console, none)",
        ),
        (
            {"OTEL_TRACES_EXPORTER": "otlp", "OTEL_TRACES_SAMPLER": "sometimes"},
            "",
            "OTEL_TRACES_SAMPLER: unknown sampler 'sometimes' (known: always_on, always_off, "
            "traceidratio, parentbased_always_on, parentbased_always_off, "
            "parentbased_traceidratio)",
        ),
        (
            {},
            "telemetry:\n  metrics_exporter: otlp\n  protocol: udp\n",
            "{config}:3: telemetry.protocol: expected one of grpc, http/protobuf, got 'udp'",
        ),
    ],
)
def test_bad_telemetry_settings_are_a_config_error_before_the_log_opens(
    tmp_path: Path, env: dict[str, str], telemetry: str, error: str
) -> None:
    result = doctor(tmp_path, env, telemetry)
    assert (result.returncode, result.stdout) == (2, "")
    expected = error.format(config=tmp_path / "kerno.yaml")
    assert result.stderr.splitlines()[-1] == f"Error: {expected}"
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "audit" / "kerno-audit.jsonl").exists()


def test_an_exporter_refusing_its_variables_is_a_config_error(tmp_path: Path) -> None:
    # The exporters read their own variables when built, after the log opened (they
    # take its resource): the log is closed whole, and no cycle runs.
    env = {"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_COMPRESSION": "zstd"}
    result = doctor(tmp_path, env, "")
    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr.splitlines()[-1] == (
        'Error: telemetry: cannot set up the exporters: Invalid value "zstd" for compression '
        "envvar OTEL_EXPORTER_OTLP_COMPRESSION"
    )
    assert [r["type"] for r in records(tmp_path)] == ["audit.start"]


#: Runs the CLI, then writes the OpenTelemetry modules the process imported to argv[1].
_REPORT_MODULES = """
import json, sys
from kerno_otel.cli import main
out = sys.argv.pop(1)
try:
    main()
finally:
    loaded = sorted(m for m in sys.modules if m.startswith("opentelemetry."))
    with open(out, "w") as f:
        json.dump(loaded, f)
"""


def test_telemetry_off_exports_nothing_and_builds_no_exporter(
    tmp_path: Path, llm: Any, receiver: TelemetryReceiver
) -> None:
    # The endpoint is set, and a collector listens there; no exporter is asked for.
    env = {**standard_env(receiver), "OTEL_TRACES_EXPORTER": "none"}
    del env["OTEL_METRICS_EXPORTER"]
    modules = tmp_path / "modules.json"
    result = doctor(tmp_path, env, config(llm), python=("-c", _REPORT_MODULES, str(modules)))
    assert result.returncode == 0, result.stderr
    assert "kerno-otel: telemetry" not in result.stderr
    assert (receiver.trace_requests, receiver.metric_requests) == ([], [])
    loaded = json.loads(modules.read_text())
    assert loaded  # the audit log's own OpenTelemetry logger is there
    # No exporter (their modules are imported only to build one), no meter provider.
    built = [
        m for m in loaded if m.startswith(("opentelemetry.exporter.", "opentelemetry.sdk.metrics"))
    ]
    assert built == []
    # Records as without telemetry: no span ids, the finding sent and explained all the same.
    written = records(tmp_path)
    assert [r for r in written if "trace_id" in r or "span_id" in r] == []
    types = [r["type"] for r in written]
    assert "finding.emit" in types and "ai.call" in types


def test_a_bad_attribute_limit_variable_is_a_telemetry_error_or_nothing(tmp_path: Path) -> None:
    # OTEL_ATTRIBUTE_COUNT_LIMIT is the SDK's, for spans: with tracing off nothing reads it
    # (the audit log's records take no OTEL_* limit), with tracing on the tracer provider
    # refuses it, a config error (exit 2) like any variable an exporter refuses.
    bad = {"OTEL_ATTRIBUTE_COUNT_LIMIT": "abc", "OTEL_LOGRECORD_ATTRIBUTE_COUNT_LIMIT": "0"}
    (tmp_path / "off").mkdir()
    (tmp_path / "on").mkdir()
    off = doctor(tmp_path / "off", bad, "")
    assert off.returncode == 0, off.stderr
    assert "Traceback" not in off.stderr and "Error" not in off.stderr
    written = records(tmp_path / "off")
    # Whole records: the audit log's attributes are not cut to the variables' limits.
    assert written[0]["type"] == "audit.start"
    assert written[0]["details"]["fsync"] and written[0]["actor"] == "audit/writer"
    on = doctor(
        tmp_path / "on",
        {
            **bad,
            "OTEL_TRACES_EXPORTER": "otlp",
            "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9",
        },
        "",
    )
    assert (on.returncode, on.stdout) == (2, "")
    assert on.stderr.splitlines()[-1] == (
        "Error: telemetry: cannot set up the exporters: "
        "OTEL_ATTRIBUTE_COUNT_LIMIT must be a non-negative integer but got abc"
    )
    assert "Traceback" not in on.stderr
    assert [r["type"] for r in records(tmp_path / "on")] == ["audit.start"]


def test_the_exporters_warnings_say_no_credential_or_address(tmp_path: Path) -> None:
    # A collector that refuses, at an endpoint with credentials in it: the gRPC exporter
    # quotes the endpoint ("bob:hunter2@127.0.0.1:9") in each warning it logs.
    env = {
        "OTEL_TRACES_EXPORTER": "otlp",
        "OTEL_EXPORTER_OTLP_ENDPOINT": "http://bob:hunter2@127.0.0.1:9",
        "OTEL_EXPORTER_OTLP_TIMEOUT": "1",
    }
    result = doctor(tmp_path, env, "")
    assert result.returncode == 0, result.stderr
    warned = [
        line
        for line in result.stderr.splitlines()
        if line.startswith("kerno-otel: telemetry: ") and "export" in line and " to " in line
    ]
    assert any("[REDACTED:secret]@" in line for line in warned), result.stderr
    assert "hunter2" not in result.stderr
    assert "127.0.0.1" not in result.stderr


def test_the_console_exporters_leave_stdout_to_the_json(tmp_path: Path) -> None:
    env = {"OTEL_TRACES_EXPORTER": "console", "OTEL_METRICS_EXPORTER": "console"}
    result = doctor(tmp_path, env, "")
    assert result.returncode == 0, result.stderr
    printed = json.loads(result.stdout)  # the result alone: -o json stays machine-readable
    assert printed["cycle_id"].startswith("cycle-")
    # The spans and the one metric export are on stderr instead.
    assert '"name": "kerno.doctor.cycle"' in result.stderr
    assert "kerno.doctor.cycle.duration" in result.stderr
