"""The lossless OTLP mapping: a line becomes a LogRecord and comes back byte for byte."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
from helpers import stream_lines
from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest

from kerno_otel.audit.chain import parse_ts
from kerno_otel.audit.log import AuditLog
from kerno_otel.config import AuditConfig
from kerno_otel.forward.otlp import RAW_EVENT, build_request, rebuild_lines

LINE = {
    "v": "1",
    "seq": 42,
    "ts": "2026-11-27T18:00:00.123456789Z",
    "type": "ai.call",
    "actor": "ai/analyzer",
    "severity": "WARN",
    "outcome": "success",
    "details": {"int": 1, "float": 1.0, "null": None, "list": [1, "x", {"b": False}], "map": {}},
    "resource": {"service.name": "kerno", "host.name": "h"},
    "trace_id": "0af7651916cd43dd8448eb211c80319c",
    "span_id": "b7ad6b7169203331",
    "prev": "sha256:" + "0" * 64,
}


def wire(lines: list[bytes]) -> ExportLogsServiceRequest:
    """Through the wire format, as a receiver gets it."""
    return ExportLogsServiceRequest.FromString(build_request(lines).SerializeToString())


def attrs(record: Any) -> dict[str, str | None]:
    return {kv.key: kv.value.WhichOneof("value") for kv in record.attributes}


def test_fields_map_to_the_otlp_log_record() -> None:
    request = wire([orjson.dumps(LINE)])
    group = request.resource_logs[0]
    record = group.scope_logs[0].log_records[0]
    assert record.event_name == "ai.call"
    assert (record.severity_text, record.severity_number) == ("WARN", 13)
    assert parse_ts(LINE["ts"]) == record.time_unix_nano
    assert record.time_unix_nano == 1795802400_123456789  # 2026-11-27T18:00:00Z, to the ns
    assert bytes.fromhex(LINE["trace_id"]) == record.trace_id
    assert bytes.fromhex(LINE["span_id"]) == record.span_id
    assert attrs(record) == {
        "kerno.audit.v": "string_value",
        "kerno.audit.seq": "int_value",
        "kerno.audit.actor": "string_value",
        "kerno.audit.outcome": "string_value",
        "kerno.audit.details": "kvlist_value",
        "kerno.audit.prev": "string_value",
    }
    assert {kv.key: kv.value.string_value for kv in group.resource.attributes} == {
        "service.name": "kerno",
        "host.name": "h",
    }
    details = next(kv.value for kv in record.attributes if kv.key == "kerno.audit.details")
    kinds = {kv.key: kv.value.WhichOneof("value") for kv in details.kvlist_value.values}
    assert kinds == {
        "int": "int_value",
        "float": "double_value",
        "null": None,
        "list": "array_value",
        "map": "kvlist_value",
    }


def test_round_trip_is_byte_identical_including_1_0_and_null() -> None:
    line = orjson.dumps(LINE)
    assert [line] == rebuild_lines(wire([line]))
    assert b'"float":1.0' in rebuild_lines(wire([line]))[0]


def test_absent_optional_fields_stay_absent() -> None:
    line = (
        b'{"v":"1","seq":0,"ts":"2026-11-27T18:00:00.000000000Z","type":"x",'
        b'"actor":"a","details":{}}'
    )
    assert [line] == rebuild_lines(wire([line]))


def test_odd_values_travel_as_attributes_and_come_back() -> None:
    lines = [
        # a ts not in the writer's 9-digit form, ids not hex, a severity that is not text
        b'{"v":"1","seq":1,"ts":"2026-11-27T18:00:00Z","type":"x","actor":"a","severity":5,'
        b'"details":{"big":18446744073709551615,"neg":-9223372036854775808},'
        b'"trace_id":"XYZ","span_id":"","prev":"p"}',
        # fields a future v1 may add, after the known ones
        b'{"v":"1","seq":2,"ts":"2026-11-27T18:00:00.000000001Z","type":"x","actor":"a",'
        b'"details":{},"prev":"p","extra":{"k":[]}}',
        b"not json at all",
        b"[1,2,3]",
    ]
    request = wire(lines)
    assert lines == rebuild_lines(request)
    raw = request.resource_logs[-1].scope_logs[0].log_records[-1]
    assert raw.event_name == RAW_EVENT


def test_resource_changes_start_a_new_resource_logs() -> None:
    a = dict(LINE, seq=1)
    b = dict(LINE, seq=2, resource={"service.name": "kerno", "service.instance.id": "new"})
    c = {k: v for k, v in LINE.items() if k != "resource"}
    lines = [orjson.dumps(a), orjson.dumps(a), orjson.dumps(b), orjson.dumps(c)]
    request = wire(lines)
    assert len(request.resource_logs) == 3
    assert not request.resource_logs[2].HasField("resource")
    assert lines == rebuild_lines(request)


def test_every_line_of_a_real_log_rebuilds(tmp_path: Path) -> None:
    live = tmp_path / "kerno-audit.jsonl"
    with AuditLog(AuditConfig(file_path=str(live))) as log:
        log.emit("bpf.load", details={"program": "fd_track", "attach": ["a"], "success": True})
        log.emit(
            "ai.call",
            details={
                "provider": "ollama",
                "model": "m",
                "cache": "miss",
                "tokens": 10,
                "prompt_size": 1,
                "response_size": 2,
                "redactions": {"ip": 1},
                "duration_ms": 12.0,
                "privacy_mode": "redacted",
                "cycle_id": "cycle-1",
            },
            trace_id=0x0AF7651916CD43DD8448EB211C80319C,
            span_id=0xB7AD6B7169203331,
        )
    lines = stream_lines(live)
    assert lines == rebuild_lines(wire(lines))


def containers(inner: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.text(), inner, max_size=4))


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    containers,
    max_leaves=12,
)


@settings(max_examples=150, deadline=None)
@given(details=st.dictionaries(st.text(), json_values, max_size=5), seq=st.integers(0, 2**62))
def test_any_details_round_trip(details: dict[str, Any], seq: int) -> None:
    line = orjson.dumps(dict(LINE, seq=seq, details=details))
    assert [line] == rebuild_lines(wire([line]))
