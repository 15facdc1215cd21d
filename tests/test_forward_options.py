"""The forwarder's settings (kerno_otel/forward/options.py): endpoint precedence, SDK log lines,
and when the lag alarm speaks. Issue 13, item 6."""

from __future__ import annotations

import io
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from helpers import stream_lines
from otlp_receivers import GrpcReceiver, HttpReceiver
from test_forwarder import audit_log, emit

from kerno_otel.audit.chain import parse_ts
from kerno_otel.config import load_config
from kerno_otel.forward.forwarder import Forwarder
from kerno_otel.forward.options import ForwarderOptions, resolve_endpoint

Receiver = GrpcReceiver | HttpReceiver
RECEIVERS = {"grpc": GrpcReceiver, "http": HttpReceiver}


@pytest.fixture(params=["grpc", "http"])
def protocol(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def receiver(protocol: str) -> Iterator[Receiver]:
    started = RECEIVERS[protocol]().start()
    yield started
    started.stop()


def dead_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# --- which endpoint ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("configured", "protocol", "env", "expected"),
    [
        # An explicit value equal to the old default is used as given, env or not.
        (
            "http://127.0.0.1:4317",
            "grpc",
            {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://elsewhere:4317"},
            ("http://127.0.0.1:4317", "otlp.endpoint"),
        ),
        (
            None,
            "grpc",
            {
                "OTEL_EXPORTER_OTLP_ENDPOINT": "http://a:4317",
                "OTEL_EXPORTER_OTLP_LOGS_ENDPOINT": "http://b:4317",
            },
            (None, "OTEL_EXPORTER_OTLP_LOGS_ENDPOINT"),
        ),
        (
            "",
            "http",
            {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://a:4318"},
            (None, "OTEL_EXPORTER_OTLP_ENDPOINT"),
        ),
        # Neither: loopback IPv4, not the SDK's localhost (which tries [::1] first).
        (None, "grpc", {}, ("http://127.0.0.1:4317", "default")),
        (None, "http", {}, ("http://127.0.0.1:4318/v1/logs", "default")),
    ],
)
def test_endpoint_precedence(
    configured: str | None, protocol: str, env: dict[str, str], expected: tuple[str | None, str]
) -> None:
    assert resolve_endpoint(configured, protocol, env) == expected


def test_the_embedded_default_leaves_the_choice_to_the_environment() -> None:
    section = load_config(None, {}).section("otlp")
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector.example:4317"}
    opts = ForwarderOptions.from_section(section, env)
    assert (opts.endpoint, opts.endpoint_origin) == (None, "OTEL_EXPORTER_OTLP_ENDPOINT")
    assert opts.describe(env) == (
        "http://collector.example:4317 over grpc (from OTEL_EXPORTER_OTLP_ENDPOINT)"
    )


def test_describe_never_shows_a_password() -> None:
    opts = ForwarderOptions.from_section({"endpoint": "https://u:s3cret@collector:4317"}, {})
    assert opts.describe({}) == "https://collector:4317 over grpc (from otlp.endpoint)"


def test_explicit_endpoint_wins_over_the_environment(
    tmp_path: Path, protocol: str, receiver: Receiver
) -> None:
    # The variable points at nothing: had it won, nothing would arrive.
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{dead_port()}"}
    section = {"endpoint": receiver.endpoint, "protocol": protocol, "timeout": "2s"}
    opts = ForwarderOptions.from_section(section, env, poll_interval=0.01)
    live = tmp_path / "kerno-audit.jsonl"
    log = audit_log(live)
    emit(log, 10)
    log.close()
    err = io.StringIO()
    forwarder = Forwarder(live, opts, stderr=err)
    forwarder.start()
    assert forwarder.wait_caught_up(60)
    assert forwarder.stop()
    assert stream_lines(live) == receiver.lines()
    assert err.getvalue().splitlines()[0] == (
        f"kerno-otel: otlp: forwarding to {receiver.endpoint} over {protocol} (from otlp.endpoint)"
    )


# --- stderr ------------------------------------------------------------------------------------

CHILD = """
import socket, sys
from pathlib import Path
from test_forwarder import WatchedSender, audit_log, emit
from kerno_otel.forward.forwarder import Forwarder
from kerno_otel.forward.options import ForwarderOptions

live = Path(sys.argv[1])
log = audit_log(live)
emit(log, 5)
log.close()
section = {"endpoint": sys.argv[3], "protocol": sys.argv[2], "timeout": "2s"}
opts = ForwarderOptions.from_section(section, {}, backoff_initial=0.05)
sender = WatchedSender(opts)
forwarder = Forwarder(live, opts, sender=sender)
forwarder.start()
sender.wait_for("failures", 2)
forwarder.stop(2.0)
"""


def test_sdk_log_lines_are_prefixed_on_stderr(tmp_path: Path, protocol: str) -> None:
    # The exporters' own warnings ("Transient error ... retrying") used to reach stderr raw.
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    tests = str(Path(__file__).resolve().parent)
    env = {**os.environ, "PYTHONPATH": tests}
    endpoint = f"http://127.0.0.1:{dead_port()}"
    done = subprocess.run(
        [sys.executable, str(script), str(tmp_path / "kerno-audit.jsonl"), protocol, endpoint],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    lines = done.stderr.splitlines()
    assert [line for line in lines if not line.startswith("kerno-otel: ")] == []
    assert any(line.startswith("kerno-otel: otlp: warning: Transient error") for line in lines)


def test_a_healthy_backlog_is_no_alarm(tmp_path: Path, protocol: str, receiver: Receiver) -> None:
    # An hour-old backlog, acknowledged batch after batch: the lag alarm used to fire anyway.
    live = tmp_path / "kerno-audit.jsonl"
    log = audit_log(live)
    emit(log, 200)
    log.close()
    lines = stream_lines(live)
    now = parse_ts(orjson.loads(lines[0])["ts"]) / 1e9 + 3600.0
    opts = ForwarderOptions(
        endpoint=receiver.endpoint,
        protocol=protocol,
        batch_size=10,
        poll_interval=0.01,
        alarm_lag_seconds=60.0,
        alarm_every_seconds=0.0,
    )
    err = io.StringIO()
    forwarder = Forwarder(live, opts, stderr=err, clock=lambda: now)
    forwarder.start()
    assert forwarder.wait_caught_up(60)
    assert forwarder.stop()
    assert receiver.lines() == lines
    assert [line for line in err.getvalue().splitlines() if "lags" in line] == []
    assert forwarder.stats()["alarms"] == 0
