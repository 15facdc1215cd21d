"""The webhook sink against a real loopback HTTP receiver: hashes, shapes, retries, a dead peer."""

from __future__ import annotations

import hashlib
import json
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from helpers import check_chain, stream_records
from kerno_otel_plugins.webhook import WebhookSink

from kerno_otel import AuditConfig, AuditLog, ConfigError
from kerno_otel.doctor.engine import Doctor, RuleInput, Settings
from kerno_otel.findings import Finding, Signals
from kerno_otel.records.schema import SchemaSet
from kerno_otel.records.validate import RecordValidator


class Receiver:
    """An HTTP server on 127.0.0.1:0 that keeps every body and answers with ``statuses``."""

    def __init__(self, statuses: list[int] | None = None) -> None:
        self.bodies: list[bytes] = []
        self.headers: list[dict[str, str]] = []
        self.statuses = list(statuses or [])
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                outer.bodies.append(self.rfile.read(length))
                outer.headers.append(dict(self.headers))
                status = outer.statuses.pop(0) if outer.statuses else 200
                self.send_response(status)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


def dead_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/hook"  # nothing listens there any more


#: A finding whose evidence holds what must never leave the process.
LEAKY = Finding(
    "tcp_retransmit_storm",
    "CRITICAL",
    "retransmits to 10.1.2.3 from pid=4242",
    {"peer": "10.1.2.3", "path": "/home/alice/app.sock", "retransmit_pct": 12.5},
)


def leaky_rule(given: RuleInput) -> list[Finding]:
    return [LEAKY, Finding("fd_leak", "WARNING", "fds growing", {"growth_per_sec": 11.0})]


class NoSource:
    def begin(self) -> None:
        return None

    def end(self, begun: None, window_s: float) -> Signals:
        return Signals(window_s, {"x": 1.0})


def run_cycle(tmp_path: Path, sinks: dict[str, Any]) -> tuple[Any, list[dict[str, Any]]]:
    log_path = tmp_path / "audit" / "kerno-audit.jsonl"
    with AuditLog(AuditConfig(file_path=str(log_path))) as log:
        doctor = Doctor(
            log,
            Settings(duration=0.01),
            sources={"none": NoSource()},
            rules={"leaky": leaky_rule},
            sinks=sinks,
        )
        result = doctor.run_cycle()
    return result, stream_records(log_path)


def emits(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r["details"] for r in records if r["type"] == "finding.emit"]


def test_payload_hash_is_the_hash_of_the_bytes_received(tmp_path: Path, receiver: Receiver) -> None:
    result, records = run_cycle(tmp_path, {"webhook": WebhookSink(receiver.url, source="host-a")})
    assert len(receiver.bodies) == 2
    details = emits(records)
    assert [d["payload_hash"] for d in details] == [
        "sha256:" + hashlib.sha256(body).hexdigest() for body in receiver.bodies
    ]
    assert [(d["rule"], d["severity"], d["sink"], d["delivered"]) for d in details] == [
        ("tcp_retransmit_storm", "CRITICAL", "webhook", True),
        ("fd_leak", "WARNING", "webhook", True),
    ]
    assert {d["cycle_id"] for d in details} == {result.cycle_id}
    assert receiver.headers[0]["Content-Type"] == "application/json"
    body = json.loads(receiver.bodies[0])
    assert body == {
        "cycle_id": result.cycle_id,
        "rule": "tcp_retransmit_storm",
        "severity": "CRITICAL",
        "title": "retransmits to [REDACTED:ip] from pid=[REDACTED:pid]",
        "evidence": {
            "peer": "[REDACTED:ip]",
            "path": "/home/[REDACTED:path]",
            "retransmit_pct": 12.5,
        },
        "source": "host-a",
        "sender": "kerno-otel/0.1.0",
    }
    for raw in receiver.bodies:
        assert b"10.1.2.3" not in raw and b"4242" not in raw and b"alice" not in raw
    validator = RecordValidator(SchemaSet.builtin())
    assert [validator.check(r) for r in records] == [None] * len(records)


def test_slack_shape(tmp_path: Path, receiver: Receiver) -> None:
    sink = WebhookSink(receiver.url, format="slack", source="host-a")
    result, _ = run_cycle(tmp_path, {"slack": sink})
    body = json.loads(receiver.bodies[1])
    text = ":warning: [WARNING] fds growing (fd_leak on host-a)"
    assert body == {
        "text": text,
        "blocks": [
            {"type": "section", "text": {"type": "mrkdwn", "text": text}},
            {"type": "section", "text": {"type": "mrkdwn", "text": "growth_per_sec=11.0"}},
            {
                "type": "context",
                "elements": [{"type": "mrkdwn", "text": f"kerno-otel {result.cycle_id}"}],
            },
        ],
    }


def test_pagerduty_events_v2_shape(tmp_path: Path, receiver: Receiver) -> None:
    sink = WebhookSink.from_section(
        {"url": receiver.url, "format": "pagerduty", "routing_key": "R0UT1NG", "timeout": "2s"}
    )
    sink.source = "host-a"
    result, records = run_cycle(tmp_path, {"pagerduty": sink})
    body = json.loads(receiver.bodies[0])
    assert body == {
        "routing_key": "R0UT1NG",
        "event_action": "trigger",
        "dedup_key": "kerno-host-a-tcp_retransmit_storm",
        "payload": {
            "summary": "[CRITICAL] retransmits to [REDACTED:ip] from pid=[REDACTED:pid]",
            "severity": "critical",
            "source": "host-a",
            "component": "tcp_retransmit_storm",
            "class": "kerno-doctor",
            "custom_details": {
                "cycle_id": result.cycle_id,
                "peer": "[REDACTED:ip]",
                "path": "/home/[REDACTED:path]",
                "retransmit_pct": 12.5,
            },
        },
    }
    assert json.loads(receiver.bodies[1])["payload"]["severity"] == "warning"
    assert emits(records)[0]["payload_hash"] == (
        "sha256:" + hashlib.sha256(receiver.bodies[0]).hexdigest()
    )


def test_retries_send_the_same_bytes(tmp_path: Path) -> None:
    receiver = Receiver([503, 200, 400])
    try:
        sink = WebhookSink(receiver.url, retries=2, backoff_s=0.01)
        _, records = run_cycle(tmp_path, {"webhook": sink})
    finally:
        receiver.close()
    assert receiver.bodies[0] == receiver.bodies[1]  # the retry of the first finding
    details = emits(records)
    assert [d["delivered"] for d in details] == [True, False]
    assert details[1]["error"] == "DeliveryError: HTTP 400 after 3 attempts"
    assert len(receiver.bodies) == 3  # 400 is final: not retried


def test_a_dead_receiver_is_delivered_false_and_the_log_stays_whole(tmp_path: Path) -> None:
    url = dead_url()
    sinks = {"webhook": WebhookSink(url, retries=1, timeout=1.0, backoff_s=0.01)}
    result, records = run_cycle(tmp_path, sinks)
    details = emits(records)
    assert [(d["rule"], d["delivered"]) for d in details] == [
        ("tcp_retransmit_storm", False),
        ("fd_leak", False),
    ]
    assert details[0]["error"] == "DeliveryError: ConnectError after 2 attempts"
    assert [r["outcome"] for r in records if r["type"] == "finding.emit"] == ["failure"] * 2
    assert [r["seq"] for r in records] == list(range(len(records)))
    log = tmp_path / "audit" / "kerno-audit.jsonl"
    assert check_chain(log.read_bytes().splitlines()) == []
    assert [d.delivered for d in result.deliveries] == [False, False]


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ({}, "webhook.url: expected an http(s) URL"),
        ({"url": "ftp://x"}, "webhook.url: expected an http(s) URL"),
        ({"url": "http://x", "format": "teams"}, "webhook.format: expected one of generic, "),
        ({"format": "pagerduty"}, "webhook.routing_key: required when format is pagerduty"),
        ({"url": "http://x", "retries": -1}, "webhook.retries: expected a whole number"),
        ({"url": "http://x", "colour": "red"}, "webhook.colour: unknown key"),
    ],
)
def test_config_errors_name_the_key(section: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        WebhookSink.from_section(section)
    assert str(info.value).startswith(message)
