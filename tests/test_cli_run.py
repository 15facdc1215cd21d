"""``kerno-otel run``: a real process, stopped by its deadline or by SIGTERM."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import orjson


def env_for(log: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KERNO_")}
    env["KERNO_AUDIT_FILE_PATH"] = str(log)
    env["KERNO_OTEL_PLUGINS"] = ""  # the bare daemon; tests/test_daemon.py covers plugins
    return env


def test_run_with_a_deadline(tmp_path: Path) -> None:
    log = tmp_path / "audit" / "kerno-audit.jsonl"
    result = subprocess.run(
        [sys.executable, "-m", "kerno_otel", "run", "--duration", "0.2s"],
        capture_output=True,
        text=True,
        env=env_for(log),
        cwd=tmp_path,
        check=False,
    )
    assert result.returncode == 0
    assert result.stdout == ""
    assert result.stderr == (
        f"kerno-otel: audit log {log}\n"
        "kerno-otel: stopped (request); 1 records written, 0 dropped\n"
    )
    records = [orjson.loads(line) for line in log.read_bytes().splitlines()]
    assert [r["type"] for r in records] == ["audit.start"]


def test_sigterm_stops_cleanly(tmp_path: Path) -> None:
    log = tmp_path / "kerno-audit.jsonl"
    proc = subprocess.Popen(
        [sys.executable, "-m", "kerno_otel", "run"],
        stderr=subprocess.PIPE,
        text=True,
        env=env_for(log),
        cwd=tmp_path,
    )
    assert proc.stderr is not None
    assert proc.stderr.readline() == f"kerno-otel: audit log {log}\n"
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=20) == 0
    assert proc.stderr.read() == (
        "kerno-otel: SIGTERM received, stopping\n"
        "kerno-otel: stopped (signal); 1 records written, 0 dropped\n"
    )


def test_print_path_and_config_errors(tmp_path: Path) -> None:
    log = tmp_path / "kerno-audit.jsonl"
    result = subprocess.run(
        [sys.executable, "-m", "kerno_otel", "run", "--print-path"],
        capture_output=True,
        text=True,
        env=env_for(log),
        cwd=tmp_path,
        check=False,
    )
    assert (result.returncode, result.stdout, result.stderr) == (0, f"{log}\n", "")

    config = tmp_path / "kerno.yaml"
    config.write_text("audit:\n  on_overflow: explode\n")
    result = subprocess.run(
        [sys.executable, "-m", "kerno_otel", "run", "--config", str(config)],
        capture_output=True,
        text=True,
        env=env_for(log),
        cwd=tmp_path,
        check=False,
    )
    assert result.returncode == 2
    assert result.stderr == (
        f"Error: {config}:2: audit.on_overflow: expected one of block, drop, got 'explode'\n"
    )


def test_symlinked_log_is_a_usage_error(tmp_path: Path) -> None:
    target = tmp_path / "target.jsonl"
    target.write_bytes(b"")
    log = tmp_path / "kerno-audit.jsonl"
    log.symlink_to(target)
    result = subprocess.run(
        [sys.executable, "-m", "kerno_otel", "run", "--duration", "0.1s"],
        capture_output=True,
        text=True,
        env=env_for(log),
        cwd=tmp_path,
        check=False,
    )
    assert result.returncode == 2
    assert result.stderr == (
        f"Error: {log}: is a symbolic link; refusing to write the audit log through it\n"
    )


def test_a_port_out_of_range_is_a_config_error_at_load(tmp_path: Path) -> None:
    # Issue 11, item 13: it was a plugin.error and the daemon ran on without HTTP, exit 0.
    log = tmp_path / "kerno-audit.jsonl"
    config = tmp_path / "kerno.yaml"
    config.write_text("http:\n  listen: 127.0.0.1:99999\n")
    env = env_for(log)
    env["KERNO_OTEL_PLUGINS"] = "auth"
    result = subprocess.run(
        [sys.executable, "-m", "kerno_otel", "run", "--config", str(config), "--duration", "5s"],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        check=False,
    )
    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr == (
        f"Error: {config}:2: http.listen: port 99999 out of range (0-65535) in '127.0.0.1:99999'\n"
    )
    assert not log.exists()


def test_a_taken_port_stops_the_daemon_with_a_clear_line(tmp_path: Path) -> None:
    # Issue 13, item 8: the daemon ran on with exit 0 and no /healthz, and said
    # "cannot listen on [REDACTED:ip]:<port>" about its own configured address.
    import socket

    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen(1)
    port = taken.getsockname()[1]
    log = tmp_path / "kerno-audit.jsonl"
    env = env_for(log)
    env["KERNO_OTEL_PLUGINS"] = "auth,lifecycle"
    env["KERNO_HTTP_LISTEN"] = f"127.0.0.1:{port}"
    try:
        result = subprocess.run(
            [sys.executable, "-m", "kerno_otel", "run", "--duration", "20s"],
            capture_output=True,
            text=True,
            env=env,
            cwd=tmp_path,
            check=False,
            timeout=60,
        )
    finally:
        taken.close()
    assert result.returncode == 1, result.stderr
    assert (
        f"kerno-otel: Error: http.listen: cannot listen on 127.0.0.1:{port}: "
        "Address already in use; stopping\n"
    ) in result.stderr
    assert "REDACTED" not in result.stderr
    records = [orjson.loads(line) for line in log.read_bytes().splitlines()]
    assert records[-1]["type"] == "daemon.stop"
    assert records[-1]["details"]["reason"] == "error"
