"""The procfs source and kerno's rules, on recorded /proc trees (tests/fixtures/procfs/<case>)."""

from __future__ import annotations

from pathlib import Path

import pytest
from kerno_otel_plugins._rules import RULES
from kerno_otel_plugins.procfs import ProcfsSource, derive, snapshot

from kerno_otel.config import SECTION_DEFAULTS
from kerno_otel.doctor.engine import RuleInput, Settings
from kerno_otel.findings import Finding, Signals

FIXTURES = Path(__file__).parent / "fixtures" / "procfs"
THRESHOLDS = {k: float(v) for k, v in SECTION_DEFAULTS["doctor"]["thresholds"].items()}
#: The rules whose signals only BPF sources measure: INFO "not checked" with procfs alone.
BPF_ONLY = {
    "scheduler_contention": "sched.delay_p99_ns",
    "syscall_error_rate": "syscall.error_pct",
    "syscall_latency_high": "syscall.p99_ns",
    "tcp_rtt_degradation": "tcp.rtt_p99_ns",
}


def signals_of(case: str, window_s: float = 2.0) -> Signals:
    start, end = FIXTURES / case / "start", FIXTURES / case / "end"
    return derive(
        snapshot(start / "proc", start / "cgroup"), snapshot(end / "proc", end / "cgroup"), window_s
    )


def evaluate(signals: Signals) -> list[Finding]:
    findings: list[Finding] = []
    ordered = sorted(RULES.items(), key=lambda item: bool(getattr(item[1], "runs_last", False)))
    for _, rule in ordered:
        findings.extend(rule(RuleInput(signals, THRESHOLDS, tuple(findings))))
    return findings


def problems(findings: list[Finding]) -> list[tuple[str, str, str]]:
    return [(f.rule, f.severity, f.title) for f in findings if f.severity != "INFO"]


def test_healthy() -> None:
    findings = evaluate(signals_of("healthy"))
    assert problems(findings) == []
    info = {f.rule: f for f in findings}
    assert {r for r, f in info.items() if "absent" in f.evidence} == set(BPF_ONLY)
    assert info["tcp_rtt_degradation"] == Finding(
        "tcp_rtt_degradation",
        "INFO",
        "not checked: tcp.rtt_p99_ns not measured by any source",
        {"absent": ["tcp.rtt_p99_ns"]},
    )
    assert findings[-1] == Finding(
        "healthy_system",
        "INFO",
        "no problems found (4 rule(s) not checked: signals absent)",
        {"signals_measured": 29, "not_checked": sorted(BPF_ONLY)},
    )


def test_oom_pressure() -> None:
    signals = signals_of("oom_pressure")
    assert signals.values["mem.used_pct"] == 95.0
    assert signals.values["psi.memory.some_pct"] == 50.0
    assert problems(evaluate(signals)) == [
        ("oom_kill_occurred", "CRITICAL", "the OOM killer ran 1 time(s) in the window"),
        ("oom_imminent", "CRITICAL", "memory 95.0% used (>= 90%): the OOM killer is close"),
        (
            "memory_limit_pressure",
            "WARNING",
            "cgroup memory 98.7% of its memory.max (>= 90%)",
        ),
        (
            "memory_high_throttling",
            "WARNING",
            "cgroup throttled at memory.high 32 time(s) in the window",
        ),
    ]


def test_retransmit_storm() -> None:
    signals = signals_of("retransmit_storm")
    assert (signals.values["tcp.out_segs"], signals.values["tcp.retransmit_pct"]) == (10000, 3.0)
    [storm] = [f for f in evaluate(signals) if f.severity != "INFO"]
    assert storm == Finding(
        "tcp_retransmit_storm",
        "WARNING",
        "3.00% of TCP segments retransmitted (>= 2%)",
        {"retransmit_pct": 3.0, "threshold_pct": 2.0, "segments_sent": 10000},
    )


def test_fd_leak() -> None:
    signals = signals_of("fd_leak")
    assert signals.context["fd.top"][0] == {
        "name": "leaky",
        "pid": 4242,
        "fds": 30,
        "growth_per_sec": 13.0,
    }
    [leak] = [f for f in evaluate(signals) if f.severity != "INFO"]
    assert leak == Finding(
        "fd_leak",
        "WARNING",
        "leaky opens 13.0 file descriptors/s more than it closes",
        {
            "growth_per_sec": 13.0,
            "threshold_per_sec": 10.0,
            "processes": [
                {"name": "leaky", "growth_per_sec": 13.0},
                {"name": "systemd", "growth_per_sec": 0.0},
            ],
        },
    )
    # The PID stays in the process: evidence carries names only.
    assert "4242" not in repr(leak)


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ({"syscall.p99_ns": 150e6}, ("syscall_latency_high", "WARNING")),
        ({"syscall.p99_ns": 600e6}, ("syscall_latency_high", "CRITICAL")),
        ({"sched.delay_p99_ns": 6e6}, ("scheduler_contention", "WARNING")),
        ({"sched.delay_p99_ns": 25e6}, ("scheduler_contention", "CRITICAL")),
        ({"disk.p99_ns": 60e6}, ("disk_io_bottleneck", "WARNING")),
        ({"disk.await_ns": 250e6}, ("disk_io_bottleneck", "CRITICAL")),
        ({"disk.write_p99_ns": 55e6}, ("disk_io_write_high", "WARNING")),
        ({"tcp.rtt_p99_ns": 150e6}, ("tcp_rtt_degradation", "WARNING")),
        ({"syscall.error_pct": 25.0}, ("syscall_error_rate", "CRITICAL")),
        ({"tcp.retransmit_pct": 12.0, "tcp.out_segs": 5000}, ("tcp_retransmit_storm", "CRITICAL")),
    ],
)
def test_bpf_signals_fed_directly(values: dict[str, float], expected: tuple[str, str]) -> None:
    findings = evaluate(Signals(30.0, values))
    assert [(f.rule, f.severity) for f in findings if f.severity != "INFO"] == [expected]


def test_below_thresholds_and_too_little_traffic() -> None:
    values = {
        "syscall.p99_ns": 99e6,
        "disk.await_ns": 49e6,
        "tcp.retransmit_pct": 50.0,
        "tcp.out_segs": 20,  # 10 of 20 segments is noise, not a storm
        "fd.growth_per_sec": 9.9,
        "mem.used_pct": 89.9,
    }
    assert problems(evaluate(Signals(30.0, values))) == []


def test_the_source_on_a_tree_and_on_this_host() -> None:
    source = ProcfsSource(FIXTURES / "healthy" / "start" / "proc", FIXTURES / "none")
    signals = source.end(source.begin(), 1.0)
    assert "cgroup.memory.used_pct" in signals.absent  # no cgroup fs under that root
    assert signals.values["mem.used_pct"] == 40.0
    live = ProcfsSource()
    signals = live.end(live.begin(), 0.1)
    assert 0.0 <= signals.values["mem.used_pct"] <= 100.0
    assert "syscall.p99_ns" not in signals.values
    assert signals.absent.isdisjoint(signals.values)


def test_unreadable_files_are_absent(tmp_path: Path) -> None:
    signals = derive(snapshot(tmp_path), snapshot(tmp_path), 1.0)
    assert signals.values == {}
    assert "mem.used_pct" in signals.absent and "tcp.retransmit_pct" in signals.absent
    assert [f.rule for f in evaluate(signals) if f.rule == "healthy_system"] == ["healthy_system"]


def test_thresholds_come_from_the_config() -> None:
    assert Settings().thresholds == {}  # the engine passes doctor.thresholds through
    strict = {**THRESHOLDS, "fd_growth_per_sec": 1.0}
    given = RuleInput(Signals(1.0, {"fd.growth_per_sec": 2.0}), strict)
    assert [f.severity for f in RULES["fd_leak"](given)] == ["WARNING"]
