"""The otlp plugin in the daemon: loaded by entry point, ships the log, stops in bounded time."""

from __future__ import annotations

import io
import socket
import time
from pathlib import Path

import pytest
from helpers import stream_lines
from kerno_otel_plugins import otlp
from otlp_receivers import GrpcReceiver, HttpReceiver

from kerno_otel.audit.log import AuditLog
from kerno_otel.config import AuditConfig, load_config
from kerno_otel.daemon.daemon import Daemon
from kerno_otel.hookspecs import DaemonContext


def run_daemon(tmp_path: Path, otlp_yaml: str, duration: float = 0.3) -> tuple[Path, str]:
    """One in-process ``kerno-otel run`` with the lifecycle and otlp plugins; (log, stderr)."""
    live = tmp_path / "log" / "kerno-audit.jsonl"
    config = tmp_path / "kerno.yaml"
    config.write_text(f"audit:\n  file_path: {live}\notlp:\n{otlp_yaml}")
    err = io.StringIO()
    env = {"KERNO_OTEL_PLUGINS": "lifecycle,otlp"}
    assert Daemon(str(config), stderr=err, env=env).run(duration) == 0
    return live, err.getvalue()


def test_daemon_ships_every_record_over_grpc(tmp_path: Path) -> None:
    receiver = GrpcReceiver().start()
    try:
        live, _ = run_daemon(
            tmp_path, f"  enabled: true\n  endpoint: {receiver.endpoint}\n  batch_size: 4\n"
        )
    finally:
        receiver.stop()
    lines = stream_lines(live)
    types = [line.split(b'"type":"')[1].split(b'"')[0] for line in lines]
    assert types[-1] == b"daemon.stop"  # shipped after the other plugins' shutdown hooks
    assert receiver.lines() == lines


def test_daemon_restarted_during_an_outage_loses_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """First run: collector down, shutdown gives up in bounded time and says so. Second run:
    collector up, the cursor carries on: every record of both runs arrives, once."""
    monkeypatch.setattr(otlp, "CATCH_UP_S", 0.3)
    monkeypatch.setattr(otlp, "STOP_S", 1.0)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    yaml = (
        f"  enabled: true\n  protocol: http\n  endpoint: http://127.0.0.1:{port}\n  timeout: 1s\n"
    )
    started = time.monotonic()
    live, _ = run_daemon(tmp_path, yaml)
    assert time.monotonic() - started < 20  # bounded (a hang would be minutes), not a speed check
    err = capsys.readouterr().err  # plugins write to the process's stderr
    written = len(stream_lines(live))
    assert (
        f"kerno-otel: otlp: {written} records not yet acknowledged at shutdown; "
        "they stay in the audit files and are sent on the next run\n"
    ) in err
    receiver = HttpReceiver(port).start()
    try:
        run_daemon(tmp_path, yaml)
    finally:
        receiver.stop()
    lines = stream_lines(live)
    assert len(lines) > written
    assert receiver.lines() == lines


def test_hooks_expose_stats_and_do_nothing_when_disabled(tmp_path: Path) -> None:
    receiver = GrpcReceiver().start()
    live = tmp_path / "kerno-audit.jsonl"
    log = AuditLog(AuditConfig(file_path=str(live)), stderr=io.StringIO())
    config = load_config(None, {})
    context = DaemonContext(audit=log, config=config, request_stop=lambda reason: None)
    otlp.daemon_startup(context)
    assert context.state == {}  # otlp.enabled is false by default
    sections = dict(config.sections)
    sections["otlp"] = dict(config.section("otlp"), enabled=True, endpoint=receiver.endpoint)
    context.config = type(config)(audit=config.audit, sections=sections)
    try:
        otlp.daemon_startup(context)
        stats = context.state[otlp.NAME].stats
        log.emit("bpf.load", details={"program": "fd_track", "attach": [], "success": True})
        otlp.daemon_shutdown(context, "request", 1.0)
    finally:
        log.close()
        receiver.stop()
    numbers = stats()
    assert (numbers["records_sent"], numbers["last_seq"], numbers["state"]) == (2, 1, "stopped")
    assert otlp.NAME not in context.state
    assert receiver.lines() == stream_lines(live)
