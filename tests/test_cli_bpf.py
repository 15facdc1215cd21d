"""``kerno-otel bpf verify``, and the BPF half of ``run`` and ``doctor``, end to end as processes.

Real kernel, as root after scripts/setup-bpf.sh (skipped elsewhere with the
reason); the unprivileged doctor runs everywhere root can drop its capabilities.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from bpf_workloads import BPF_UNAVAILABLE, SKIP_REASON
from helpers import stream_records

from kerno_otel.records.schema import SchemaSet
from kerno_otel.records.validate import RecordValidator

needs_bpf = pytest.mark.skipif(BPF_UNAVAILABLE is not None, reason=SKIP_REASON)
PROGRAMS = ["syscall_latency", "tcp_monitor", "disk_io", "sched_delay", "fd_track", "oom_track"]
#: Thresholds that make the syscall and scheduler rules fire on any measurement.
LOW = (
    "doctor:\n"
    "  thresholds:\n"
    "    syscall_p99_warning_ns: 1\n"
    "    syscall_p99_critical_ns: 1000000000000\n"
    "    sched_delay_warning_ns: 1\n"
    "    sched_delay_critical_ns: 1000000000000\n"
    "http:\n"
    "  enabled: false\n"
)


def env_for(log: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KERNO_", "OTEL_"))}
    env["KERNO_AUDIT_FILE_PATH"] = str(log)
    env["KERNO_HTTP_ENABLED"] = "false"
    return env


@contextmanager
def driving_load(where: Path) -> Iterator[None]:
    """Syscalls, file opens, wakeups and direct (uncached) block writes until the block ends."""
    script = (
        "import os, time\n"
        f"p = {str(where / 'load.bin')!r}\n"
        "block = b'k' * 65536\n"
        "while True:\n"
        "    fd = os.open(p, os.O_WRONLY | os.O_CREAT)\n"
        "    os.write(fd, block); os.fsync(fd); os.close(fd)\n"
        "    time.sleep(0.01)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", script])
    try:
        yield
    finally:
        proc.kill()
        proc.wait(10)


@needs_bpf
def test_verify_loads_six_and_reads_data_under_load(tmp_path: Path) -> None:
    log = tmp_path / "audit" / "kerno-audit.jsonl"
    with driving_load(tmp_path):
        result = subprocess.run(
            [sys.executable, "-m", "kerno_otel", "bpf", "verify", "--read", "3s", "--json"],
            capture_output=True,
            text=True,
            env=env_for(log),
            timeout=120,
            check=False,
        )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert (report["loaded"], report["failed"], report["read_s"]) == (6, 0, 3.0)
    by_name = {p["program"]: p for p in report["programs"]}
    assert list(by_name) == PROGRAMS
    for name in ("syscall_latency", "sched_delay", "fd_track", "disk_io"):
        assert by_name[name]["events"] > 0, name
    for entry in report["programs"]:
        assert entry["loaded"] is True and entry["lost"] == 0 and entry["load_ms"] > 0
        assert entry["tracepoints"]
    assert by_name["sched_delay"]["tracepoints"] == [
        "sched:sched_wakeup",
        "sched:sched_wakeup_new",
        "sched:sched_switch",
    ]
    assert result.stderr.endswith(f"6/6 programs loaded; audit log {log}\n")
    loads = [r for r in stream_records(log) if r["type"] == "bpf.load"]
    assert [r["details"]["program"] for r in loads] == PROGRAMS


@needs_bpf
def test_run_records_a_valid_bpf_load_for_each_program(tmp_path: Path) -> None:
    log = tmp_path / "audit" / "kerno-audit.jsonl"
    result = subprocess.run(
        [sys.executable, "-m", "kerno_otel", "run", "--duration", "1s"],
        capture_output=True,
        text=True,
        env=env_for(log),
        cwd=tmp_path,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "kerno-otel: bpf:" not in result.stderr  # nothing failed, nothing to say
    records = stream_records(log)
    validator = RecordValidator(SchemaSet.builtin())
    assert [validator.check(r) for r in records] == [None] * len(records)
    loads = [r for r in records if r["type"] == "bpf.load"]
    assert [(r["details"]["program"], r["details"]["success"]) for r in loads] == [
        (name, True) for name in PROGRAMS
    ]
    assert all(r["actor"] == "bpf/loader" and r["outcome"] == "success" for r in loads)
    assert loads[0]["details"]["attach"] == ["raw_syscalls:sys_enter", "raw_syscalls:sys_exit"]
    # Loaded before the daemon's start-up hooks: before the lifecycle plugin's daemon.start.
    types = [r["type"] for r in records]
    assert types.index("bpf.load") < types.index("daemon.start")


def doctor(tmp_path: Path, *prefix: str) -> tuple[subprocess.CompletedProcess[str], dict]:
    config = tmp_path / "kerno.yaml"
    config.write_text(LOW)
    log = tmp_path / "audit" / "kerno-audit.jsonl"
    command = [sys.executable, "-m", "kerno_otel", "doctor", "--config", str(config)]
    result = subprocess.run(
        [*prefix, *command, "--duration", "1s", "-o", "json"],
        capture_output=True,
        text=True,
        env=env_for(log),
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return result, json.loads(result.stdout)


@needs_bpf
def test_doctor_as_root_checks_the_blind_rules_from_bpf(tmp_path: Path) -> None:
    result, cycle = doctor(tmp_path)
    findings = {f["rule"]: f for f in cycle["findings"]}
    for rule, source in (
        ("syscall_latency_high", "bpf.syscall_latency"),
        ("scheduler_contention", "bpf.sched_delay"),
    ):
        assert findings[rule]["severity"] == "WARNING", findings[rule]
        assert findings[rule]["evidence"]["source"] == source
    # The error-rate rule was checked (it may or may not fire on this host's load).
    assert "syscall.error_pct" not in cycle["absent"]
    if "syscall_error_rate" in findings:
        assert findings["syscall_error_rate"]["evidence"]["source"] == "bpf.syscall_latency"
    for name in ("syscall.p99_ns", "sched.delay_p99_ns", "disk.p99_ns", "oom.kills"):
        assert name not in cycle["absent"], name
    assert "tcp.rtt_p99_ns" in cycle["absent"]
    assert "kerno-otel: bpf:" not in result.stderr


@pytest.mark.skipif(os.geteuid() != 0, reason="dropping capabilities needs root to start with")
@pytest.mark.skipif(shutil.which("setpriv") is None, reason="no setpriv to drop capabilities")
def test_doctor_without_privilege_works_on_procfs_and_says_why(tmp_path: Path) -> None:
    # uid 0 with an empty bounding set: the process really holds no capability.
    result, cycle = doctor(tmp_path, "setpriv", "--bounding-set=-all", "--inh-caps=-all", "--")
    why = "not root: loading BPF needs CAP_BPF and CAP_PERFMON (or CAP_SYS_ADMIN)"
    said = [line for line in result.stderr.splitlines() if line.startswith("kerno-otel: bpf:")]
    assert said == [
        f"kerno-otel: bpf: {name} not loaded: {why}; its signals come from procfs where it has them"
        for name in PROGRAMS
    ]
    findings = {f["rule"]: f for f in cycle["findings"]}
    blind = findings["syscall_latency_high"]
    assert blind["severity"] == "INFO"
    assert blind["title"] == (
        f"not checked: syscall.p99_ns not measured by any source (bpf.syscall_latency: "
        f"not loaded: {why})"
    )
    assert findings["scheduler_contention"]["evidence"]["why"] == [
        f"bpf.sched_delay: not loaded: {why}"
    ]
    # procfs still measures what it can: memory, load.
    assert "mem.used_pct" not in cycle["absent"]
    loads = [
        r
        for r in stream_records(tmp_path / "audit" / "kerno-audit.jsonl")
        if r["type"] == "bpf.load"
    ]
    assert [(r["details"]["success"], r["details"]["error"]) for r in loads] == [(False, why)] * 6


@pytest.mark.skipif(os.geteuid() != 0, reason="dropping capabilities needs root to start with")
@pytest.mark.skipif(shutil.which("setpriv") is None, reason="no setpriv to drop capabilities")
def test_verify_exits_1_when_programs_fail(tmp_path: Path) -> None:
    log = tmp_path / "audit" / "kerno-audit.jsonl"
    result = subprocess.run(
        [
            *("setpriv", "--bounding-set=-all", "--inh-caps=-all", "--"),
            *(sys.executable, "-m", "kerno_otel", "bpf", "verify", "--read", "0s", "--json"),
        ],
        capture_output=True,
        text=True,
        env=env_for(log),
        timeout=120,
        check=False,
    )
    assert result.returncode == 1
    report = json.loads(result.stdout)
    assert (report["loaded"], report["failed"]) == (0, 6)
    why = "not root: loading BPF needs CAP_BPF and CAP_PERFMON (or CAP_SYS_ADMIN)"
    assert {(p["loaded"], p["error"], p["events"]) for p in report["programs"]} == {
        (False, why, None)
    }
    assert result.stderr.endswith(f"0/6 programs loaded; audit log {log}\n")


def test_doctor_with_bpf_off_says_so(tmp_path: Path) -> None:
    config = tmp_path / "kerno.yaml"
    config.write_text("bpf:\n  enabled: false\n")
    log = tmp_path / "audit" / "kerno-audit.jsonl"
    result = subprocess.run(
        [
            *(sys.executable, "-m", "kerno_otel", "doctor", "--config", str(config)),
            *("--duration", "1s", "-o", "json"),
        ],
        capture_output=True,
        text=True,
        env=env_for(log),
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    said = [line for line in result.stderr.splitlines() if line.startswith("kerno-otel: bpf:")]
    assert said == ["kerno-otel: bpf: off (bpf.enabled is false): the doctor uses procfs only"]
    findings = {f["rule"]: f for f in json.loads(result.stdout)["findings"]}
    assert findings["syscall_latency_high"]["evidence"]["why"] == [
        "bpf.syscall_latency: BPF is off (bpf.enabled is false)"
    ]
    assert not [r for r in stream_records(log) if r["type"] == "bpf.load"]
