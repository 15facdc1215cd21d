"""Realistic audit events for benchmarks, tests and demos: every producer type, leaks included.

Not part of the public API. The strings deliberately carry what real daemons
leak (addresses in error text, ``pid=`` forms, home paths, keys in URLs) so the
redactor does real work on a realistic share of records.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class SampleEvent:
    """One event as a producer would emit it."""

    type: str
    actor: str
    details: dict[str, Any]
    outcome: str = "success"
    severity: str | None = None


def _digest(rng: random.Random) -> str:
    return "sha256:" + hashlib.sha256(rng.randbytes(16)).hexdigest()


def _cycle(rng: random.Random) -> str:
    return f"cycle-20261127-{rng.randrange(0, 235959):06d}"


def _event(kind: int, rng: random.Random) -> SampleEvent:
    ip = f"10.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(1, 255)}"
    if kind == 0:
        return SampleEvent(
            "daemon.start",
            "kerno/start",
            {
                "version": "0.1.0",
                "config_path": "/etc/kerno/kerno.yaml",
                "plugins": [
                    {"name": "lifecycle", "version": "0.1.0"},
                    {"name": "auth", "version": "0.1.0"},
                ],
            },
        )
    if kind == 1:
        return SampleEvent(
            "daemon.stop",
            "kerno/start",
            {"version": "0.1.0", "reason": "signal", "uptime_s": round(rng.uniform(1, 1e6), 3)},
        )
    if kind == 2:
        return SampleEvent(
            "daemon.panic",
            "kerno/start",
            {"version": "0.1.0", "exception_type": "RuntimeError", "panic_digest": _digest(rng)},
            outcome="failure",
        )
    if kind == 3:
        return SampleEvent(
            "config.reload",
            "config/file",
            {
                "path": "/etc/kerno/kerno.yaml",
                "source": "SIGHUP",
                "uid": 0,
                "changed_fields": ["doctor.interval", "ai.api_key"],
                "applied": ["doctor.interval"],
                "restart_required": [],
                "changes": [
                    {"field": "doctor.interval", "before": "30s", "after": "60s"},
                    {"field": "ai.api_key", "before": "***", "after": "***"},
                ],
            },
        )
    if kind in (4, 5, 6):
        failed = rng.random() < 0.2
        details: dict[str, Any] = {
            "provider": rng.choice(["anthropic", "openai", "ollama"]),
            "model": "claude-sonnet-4-5",
            "cache": rng.choice(["hit", "miss"]),
            "tokens": {"input": rng.randrange(200, 4000), "output": rng.randrange(50, 800)},
            "prompt_size": rng.randrange(1000, 16000),
            "response_size": rng.randrange(200, 4000),
            "redactions": {
                "ip": rng.randrange(4),
                "pid": rng.randrange(6),
                "path": rng.randrange(3),
            },
            "duration_ms": round(rng.uniform(50, 4000), 2),
            "privacy_mode": rng.choice(["full", "redacted", "summary"]),
            "cycle_id": _cycle(rng),
        }
        if failed:
            details["error"] = (
                f"connect to {ip}:443 failed: connection refused (pid={rng.randrange(100, 99999)})"
            )
        return SampleEvent(
            "ai.call", "ai/analyzer", details, outcome="failure" if failed else "success"
        )
    if kind in (7, 8):
        return SampleEvent(
            "finding.emit",
            "doctor/engine",
            {
                "rule": rng.choice(
                    ["fd_leak", "tcp_retransmit_storm", "oom_imminent", "disk_io_bottleneck"]
                ),
                "severity": rng.choice(["WARNING", "CRITICAL"]),
                "sink": rng.choice(["log", "webhook"]),
                "payload_hash": _digest(rng),
                "cycle_id": _cycle(rng),
                "delivered": rng.random() < 0.95,
            },
        )
    if kind in (9, 10, 11):
        return SampleEvent(
            "auth.failure",
            "http/server",
            {
                "endpoint": "/metrics",
                "reason": rng.choice(["token_missing", "token_mismatch", "mtls_failure"]),
                "remote_ip": ip,
                "suppressed": rng.randrange(0, 50),
            },
            outcome="failure",
        )
    if kind == 12:
        ok = rng.random() < 0.8
        bpf: dict[str, Any] = {
            "program": rng.choice(["syscall_latency", "tcp_monitor", "fd_track"]),
            "attach": ["raw_syscalls:sys_enter", "raw_syscalls:sys_exit"],
            "success": ok,
        }
        if not ok:
            bpf["error"] = (
                "cannot open /home/builder/.cache/bcc/headers: permission denied for pid 4242"
            )
        return SampleEvent("bpf.load", "bpf/loader", bpf, outcome="success" if ok else "failure")
    if kind == 13:
        return SampleEvent(
            "plugin.load",
            "plugins/manager",
            {
                "plugin": "procfs",
                "distribution": "kerno-otel",
                "version": "0.1.0",
                "hooks": ["register_sources"],
            },
        )
    return SampleEvent(
        "plugin.error",
        "plugins/manager",
        {
            "plugin": "acme_sink",
            "distribution": "acme-kerno",
            "version": "1.2.0",
            "hook": "register_sinks",
            "error_type": "ConnectionError",
            "error_digest": _digest(rng),
        },
        outcome="failure",
    )


#: How many kinds :func:`sample_events` cycles through (types weighted by repetition).
KINDS = 15


def sample_events(count: int, seed: int = 1) -> list[SampleEvent]:
    """``count`` events covering every producer type of the catalogue, reproducibly."""
    rng = random.Random(seed)
    return [_event(rng.randrange(KINDS), rng) for _ in range(count)]
