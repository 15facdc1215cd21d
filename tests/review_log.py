"""A log for the reviewer's commands, built through the real pipeline: rotation, gzip,
signed checkpoints, a crash (torn tail repaired with ``audit.recover``) and an
``audit.loss``. Shared by the ``test_review_*`` modules."""

from __future__ import annotations

import io
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kerno_otel.audit.files import rotated_files
from kerno_otel.audit.keys import KeyPair, generate
from kerno_otel.audit.log import AuditLog
from kerno_otel.config import AuditConfig, CheckpointConfig

LIVE = "kerno-audit.jsonl"
PROVIDERS = ("anthropic", "openai", "ollama")
RULES = ("fd_leak", "oom_imminent")


@dataclass(frozen=True)
class Built:
    directory: Path  # the log directory (live file, rotated .gz files, .checkpoints)
    keys: KeyPair

    @property
    def live(self) -> Path:
        return self.directory / LIVE


def config(directory: Path, keys: KeyPair) -> AuditConfig:
    return AuditConfig(
        file_path=str(directory / LIVE),
        max_size_mb=0.02,
        compress=True,
        checkpoint=CheckpointConfig(
            key_file=str(keys.private_path), every_records=25, every_seconds=3600.0
        ),
    )


def ai_call(i: int) -> tuple[dict[str, Any], str]:
    failed = i % 7 == 3
    details: dict[str, Any] = {
        "provider": PROVIDERS[i % 3],
        "model": "claude-sonnet-4-5" if i % 2 else "gpt-4o-mini",
        "cache": "hit" if i % 4 == 0 else "miss",
        "tokens": {"input": 100 + i, "output": 10 + i},
        "prompt_size": 1000 + i,
        "response_size": 200 + i,
        "redactions": {"ip": i % 2},
        "duration_ms": 12.5,
        "privacy_mode": "redacted",
        "cycle_id": f"cycle-20261127-1800{i % 5:02d}",
    }
    if failed:
        details["error"] = "connect failed: connection refused"
    return details, "failure" if failed else "success"


def emit_session(log: AuditLog, start: int, count: int) -> None:
    """``count`` rounds of producer events, numbered from ``start``."""
    log.emit(
        "daemon.start",
        actor="kerno/start",
        details={"version": "0.1.0", "config_path": "/etc/kerno/kerno.yaml", "plugins": []},
    )
    for i in range(start, start + count):
        details, outcome = ai_call(i)
        log.emit("ai.call", actor="ai/analyzer", details=details, outcome=outcome)
        if i % 3 == 0:
            log.emit(
                "finding.emit",
                actor="doctor/engine",
                details={
                    "rule": RULES[i % 2],
                    "severity": "CRITICAL" if i % 2 else "WARNING",
                    "sink": "webhook" if i % 6 == 0 else "log",
                    "payload_hash": "sha256:" + f"{i:064x}",
                    "cycle_id": f"cycle-20261127-1800{i % 5:02d}",
                    "delivered": i % 9 != 0,
                },
            )
        if i % 5 == 0:
            log.emit(
                "auth.failure",
                actor="http/server",
                details={
                    "endpoint": "/metrics",
                    "reason": "token_missing" if i % 10 == 0 else "token_mismatch",
                    "remote_ip": "192.0.2.7",
                    "suppressed": i % 4,
                },
                outcome="failure",
            )
        if i % 8 == 0:
            ok = i % 16 == 0
            bpf: dict[str, Any] = {
                "program": "fd_track" if i % 3 else "tcp_monitor",
                "attach": ["syscalls:sys_exit_openat"],
                "success": ok,
            }
            if not ok:
                bpf["error"] = "permission denied"
            log.emit(
                "bpf.load", actor="bpf/loader", details=bpf, outcome="success" if ok else "failure"
            )
    log.emit(
        "config.reload",
        actor="config/SIGHUP",
        details={
            "path": "/etc/kerno/kerno.yaml",
            "source": "SIGHUP",
            "uid": 0,
            "changed_fields": ["doctor.interval"],
            "applied": ["doctor.interval"],
            "restart_required": [],
            "changes": [{"field": "doctor.interval", "before": "30s", "after": "60s"}],
        },
    )


def build(directory: Path, key_dir: Path) -> Built:
    """Two daemon sessions with a crash between them, then a refused record (a loss)."""
    keys = generate(key_dir)
    directory.mkdir(parents=True)
    with AuditLog(config(directory, keys), stderr=io.StringIO()) as log:
        emit_session(log, 0, 40)
    # The crash: a line cut short by SIGKILL mid-write, as the writer would leave it.
    fd = os.open(directory / LIVE, os.O_WRONLY | os.O_APPEND)
    os.write(fd, b'{"v":"1","seq":999999,"ts":"2026-11-27T18:')
    os.close(fd)
    with AuditLog(config(directory, keys), stderr=io.StringIO()) as log:
        emit_session(log, 40, 30)
        # A record the schema refuses (a trace id that is no id): written as audit.loss.
        log.emit(
            "plugin.load",
            actor="plugins/manager",
            details={"plugin": "p", "distribution": "d", "version": "1", "hooks": []},
            trace_id="abc",  # type: ignore[arg-type]
        )
        log.emit(
            "plugin.error",
            actor="plugins/manager",
            details={
                "plugin": "acme",
                "distribution": "acme-kerno",
                "version": "1.0",
                "hook": "register_sinks",
                "error_type": "ConnectionError",
                "error_digest": "sha256:" + "ab" * 32,
            },
            outcome="failure",
        )
    assert len(rotated_files(directory / LIVE)) >= 3
    return Built(directory, keys)
