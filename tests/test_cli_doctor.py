"""``kerno-otel doctor`` as a real process: one audited cycle, output, exit codes, errors."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from helpers import QUIET_THRESHOLDS, fake_distribution, stream_records

from kerno_otel.records.schema import SchemaSet
from kerno_otel.records.validate import RecordValidator


def doctor(
    tmp_path: Path, *args: str, config: str = "", plugins: str = "procfs,doctor,webhook"
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KERNO_")}
    env["KERNO_AUDIT_FILE_PATH"] = str(tmp_path / "audit" / "kerno-audit.jsonl")
    env["KERNO_OTEL_PLUGINS"] = plugins
    if config:
        (tmp_path / "kerno.yaml").write_text(config)
        args = ("--config", str(tmp_path / "kerno.yaml"), *args)
    return subprocess.run(
        [sys.executable, "-m", "kerno_otel", "doctor", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        check=False,
        timeout=60,
    )


def test_one_cycle_is_printed_and_its_records_validate(tmp_path: Path) -> None:
    result = doctor(tmp_path, "--duration", "2s", "--no-ai")
    assert result.returncode == 0, result.stderr
    # what the host shows depends on how busy it is (a loaded CI machine warns): any verdict
    assert re.search(r"\b(healthy_system|INFO|WARNING|CRITICAL)\b", result.stdout), result.stdout
    log = tmp_path / "audit" / "kerno-audit.jsonl"
    match = re.fullmatch(
        rf"(cycle-[0-9]{{8}}-[0-9]{{6}}): [0-9]+ findings, [0-9]+ sent; audit log {log}\n",
        result.stderr.splitlines(keepends=True)[-1],
    )
    assert match is not None, result.stderr
    assert match.group(1) in result.stdout  # the table's title
    validate = subprocess.run(
        [sys.executable, "-m", "kerno_otel", "audit", "validate", str(log)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert (validate.returncode, validate.stdout) == (0, "")


def test_json_output_exit_code_and_a_dead_webhook(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    config = (
        "doctor:\n  sinks: [log, webhook]\n  thresholds:\n    oom_memory_pct: 0\n"
        + QUIET_THRESHOLDS
        + f"webhook:\n  url: http://127.0.0.1:{port}/hook\n  retries: 0\n  timeout: 1s\n"
    )
    result = doctor(tmp_path, "--duration", "1s", "-o", "json", "--exit-code", config=config)
    assert result.returncode == 1, result.stderr
    document = json.loads(result.stdout)
    [oom] = [f for f in document["findings"] if f["rule"] == "oom_imminent"]
    assert oom["severity"] == "CRITICAL"
    assert "syscall.p99_ns" in document["absent"]
    assert document["analysis"] is None
    sent = [(d["rule"], d["sink"], d["delivered"]) for d in document["deliveries"]]
    assert ("oom_imminent", "log", True) in sent
    assert ("oom_imminent", "webhook", False) in sent
    emits = [
        r["details"]
        for r in stream_records(tmp_path / "audit" / "kerno-audit.jsonl")
        if r["type"] == "finding.emit"
    ]
    assert [(d["rule"], d["sink"], d["delivered"]) for d in emits] == sent
    assert {d["cycle_id"] for d in emits} == {document["cycle_id"]}
    assert "(1 not delivered)" in result.stderr or "not delivered)" in result.stderr


def test_usage_and_config_errors(tmp_path: Path) -> None:
    result = doctor(tmp_path, "--duration", "10m")
    assert (result.returncode, result.stdout, result.stderr) == (
        2,
        "",
        "Error: --duration: expected a duration from 1s to 5m, got '10m'\n",
    )
    result = doctor(tmp_path, "--duration", "1s", config="doctor:\n  sinks: [pager]\n")
    assert (result.returncode, result.stderr) == (
        2,
        "Error: doctor.sinks: unknown sink 'pager' (known: log, webhook)\n",
    )
    result = doctor(tmp_path, "--duration", "1s", config="doctor:\n  sinks: [webhook]\n")
    assert (result.returncode, result.stderr) == (
        2,
        "Error: webhook.url: expected an http(s) URL\n",
    )


def test_ai_call_and_finding_emit_share_the_cycle_id(tmp_path: Path) -> None:
    """The analyzer plugin (when installed) is called once per cycle, with the cycle's id."""
    pytest.importorskip("kerno_otel_plugins.analyzer")
    seen: list[bytes] = []

    class Ollama(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            seen.append(self.rfile.read(int(self.headers.get("Content-Length", "0"))))
            body = json.dumps(
                {
                    "model": "llama3.1",
                    "message": {"role": "assistant", "content": "Memory is nearly full."},
                    "done": True,
                    "prompt_eval_count": 12,
                    "eval_count": 5,
                }
            ).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Ollama)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    config = (
        "doctor:\n  thresholds:\n    oom_memory_pct: 0\n"
        + QUIET_THRESHOLDS
        + "ai:\n  enabled: true\n  provider: ollama\n"
        f"  endpoint: http://127.0.0.1:{server.server_address[1]}\n"
    )
    try:
        result = doctor(
            tmp_path,
            "--duration",
            "1s",
            "-o",
            "json",
            "--ai",
            config=config,
            plugins="procfs,doctor,analyzer",
        )
    finally:
        server.shutdown()
        server.server_close()
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    assert document["analysis"]["text"] == "Memory is nearly full."
    assert len(seen) == 1
    records = stream_records(tmp_path / "audit" / "kerno-audit.jsonl")
    linked = [r["type"] for r in records if r["details"].get("cycle_id") == document["cycle_id"]]
    assert linked == ["finding.emit", "ai.call"]
    validator = RecordValidator(SchemaSet.builtin())
    assert [validator.check(r) for r in records] == [None] * len(records)


def test_doctor_records_plugin_failures(tmp_path: Path) -> None:
    site = tmp_path / "site"
    fake_distribution(
        site, "kerno-test-bad", "2.0", {"kerno_test_noimport": "raise ImportError('nope')\n"}
    )
    log = tmp_path / "audit.jsonl"
    env = {k: v for k, v in os.environ.items() if not k.startswith("KERNO_")}
    env.update(
        KERNO_AUDIT_FILE_PATH=str(log),
        KERNO_OTEL_PLUGINS="procfs,doctor,noimport",
        PYTHONPATH=str(site),
    )
    result = subprocess.run(
        [sys.executable, "-m", "kerno_otel", "doctor", "--duration", "1s", "-o", "json"],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert (
        "kerno-otel: plugin 'noimport' (kerno-test-bad 2.0) failed in load: ImportError: nope\n"
        in result.stderr
    )
    records = [json.loads(line) for line in log.read_text().splitlines()]
    errors = [r["details"] for r in records if r["type"] == "plugin.error"]
    assert [(e["plugin"], e["hook"], e["error_type"]) for e in errors] == [
        ("noimport", "load", "ImportError")
    ]
