"""kerno's doctor rules, ported to :class:`kerno_otel.findings.Signals`.

Signal names (dotted; ``*_ns`` in nanoseconds, ``*_pct`` in percent):

- procfs: ``mem.used_pct``, ``mem.oom_kills``, ``cgroup.memory.used_pct``,
  ``cgroup.memory.high_events``, ``cgroup.memory.oom_kills``, ``tcp.retransmit_pct``,
  ``tcp.out_segs``, ``fd.growth_per_sec``, ``disk.await_ns``, ``disk.write_await_ns``;
- BPF only (the bpf plugin): ``syscall.p99_ns``, ``syscall.error_pct``,
  ``sched.delay_p99_ns``, ``tcp.rtt_p99_ns``, ``disk.p99_ns``, ``disk.write_p99_ns``,
  ``fd.process_growth_per_sec``, ``oom.kills``.

Where both measure the same thing, a rule takes the BPF signal when present
and the procfs one otherwise; a finding's evidence names the ``source`` that
measured what it quotes. Thresholds are kerno's, from ``doctor.thresholds``. A
rule whose signals are all absent returns one INFO finding naming them and,
where a source said why (``why.<signal>``: BPF not loaded, and why), that too;
never a guess. Where procfs
only has an average latency (``disk.await_ns``), the rule uses it as what it
is, a lower bound of the p99: above a threshold it proves the p99 is too; it
never proves the opposite.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, Final

from kerno_otel import RuleInput
from kerno_otel.findings import Finding, FindingSeverity

#: Below this many segments sent in the window a retransmit percentage is noise.
MIN_TCP_SEGMENTS: Final = 100
#: tcp_rtt_degradation has no kerno threshold name: fixed at 100 ms / 500 ms p99.
RTT_WARNING_NS: Final = 100_000_000
RTT_CRITICAL_NS: Final = 500_000_000
#: syscall_error_rate has no kerno threshold name: fixed at 5% / 20% of syscalls failing.
SYSCALL_ERROR_WARNING_PCT: Final = 5.0
SYSCALL_ERROR_CRITICAL_PCT: Final = 20.0
#: How much above tcp_retransmit_pct a storm turns CRITICAL.
RETRANSMIT_CRITICAL_FACTOR: Final = 5.0

RuleFn = Callable[[RuleInput], list[Finding]]


def _first(given: RuleInput, *names: str) -> tuple[str, float] | None:
    for name in names:
        if name in given.signals.values:
            return name, float(given.signals.values[name])
    return None


def _source(given: RuleInput, name: str) -> dict[str, str]:
    """``{"source": <the source that measured name>}``, or nothing when no engine said."""
    source = given.signals.sources.get(name)
    return {} if source is None else {"source": source}


def _absent(rule: str, given: RuleInput, *names: str) -> list[Finding]:
    evidence: dict[str, Any] = {"absent": list(names)}
    why = given.signals.context
    reasons = [str(why[f"why.{n}"]) for n in names if f"why.{n}" in why]
    title = f"not checked: {', '.join(names)} not measured by any source"
    if reasons:
        unique = list(dict.fromkeys(reasons))
        evidence["why"] = unique
        title += f" ({'; '.join(unique)})"
    return [Finding(rule, "INFO", title, evidence)]


def _ms(ns: float) -> str:
    return f"{ns / 1e6:.1f} ms"


def _latency(
    rule: str,
    given: RuleInput,
    names: tuple[str, ...],
    warning_key: str,
    critical_key: str,
    what: str,
) -> list[Finding]:
    found = _first(given, *names)
    if found is None:
        return _absent(rule, given, *names)
    name, value = found
    warning = given.thresholds[warning_key]
    critical = given.thresholds[critical_key]
    severity: FindingSeverity
    if value >= critical:
        severity = "CRITICAL"
    elif value >= warning:
        severity = "WARNING"
    else:
        return []
    kind = "p99" if "p99" in name else "average (a lower bound of the p99)"
    limit = critical if severity == "CRITICAL" else warning
    return [
        Finding(
            rule,
            severity,
            f"{what} {kind} {_ms(value)} >= {_ms(limit)}",
            {
                "signal": name,
                "value_ns": value,
                "threshold_ns": limit,
                **_source(given, name),
            },
        )
    ]


# --- the rules ---------------------------------------------------------------------------------


def disk_io_bottleneck(given: RuleInput) -> list[Finding]:
    return _latency(
        "disk_io_bottleneck",
        given,
        ("disk.p99_ns", "disk.await_ns"),
        "disk_p99_warning_ns",
        "disk_p99_critical_ns",
        "disk I/O latency",
    )


def disk_io_write_high(given: RuleInput) -> list[Finding]:
    return _latency(
        "disk_io_write_high",
        given,
        ("disk.write_p99_ns", "disk.write_await_ns"),
        "disk_p99_warning_ns",
        "disk_p99_critical_ns",
        "disk write latency",
    )


def syscall_latency_high(given: RuleInput) -> list[Finding]:
    return _latency(
        "syscall_latency_high",
        given,
        ("syscall.p99_ns",),
        "syscall_p99_warning_ns",
        "syscall_p99_critical_ns",
        "syscall latency",
    )


def scheduler_contention(given: RuleInput) -> list[Finding]:
    return _latency(
        "scheduler_contention",
        given,
        ("sched.delay_p99_ns",),
        "sched_delay_warning_ns",
        "sched_delay_critical_ns",
        "run-queue delay",
    )


def tcp_rtt_degradation(given: RuleInput) -> list[Finding]:
    fixed = {**given.thresholds, "_rtt_w": RTT_WARNING_NS, "_rtt_c": RTT_CRITICAL_NS}
    return _latency(
        "tcp_rtt_degradation",
        RuleInput(given.signals, fixed, given.earlier),
        ("tcp.rtt_p99_ns",),
        "_rtt_w",
        "_rtt_c",
        "TCP round-trip time",
    )


def oom_kill_occurred(given: RuleInput) -> list[Finding]:
    names = ("oom.kills", "mem.oom_kills", "cgroup.memory.oom_kills")
    measured = {n: given.signals.values[n] for n in names if n in given.signals.values}
    if not measured:
        return _absent("oom_kill_occurred", given, *names)
    worst = max(measured, key=lambda n: measured[n])
    kills = int(measured[worst])
    if kills <= 0:
        return []
    evidence: dict[str, Any] = {"oom_kills": kills, **_source(given, worst)}
    victims = given.signals.context.get("mem.oom_victims")
    if victims:
        evidence["victims"] = list(victims)
    return [
        Finding(
            "oom_kill_occurred",
            "CRITICAL",
            f"the OOM killer ran {kills} time(s) in the window",
            evidence,
        )
    ]


def oom_imminent(given: RuleInput) -> list[Finding]:
    found = _first(given, "mem.used_pct")
    if found is None:
        return _absent("oom_imminent", given, "mem.used_pct")
    _, used = found
    limit = given.thresholds["oom_memory_pct"]
    if used < limit:
        return []
    evidence: dict[str, Any] = {
        "mem_used_pct": round(used, 1),
        "threshold_pct": limit,
        **_source(given, "mem.used_pct"),
    }
    if "psi.memory.some_avg10" in given.signals.values:
        evidence["psi_memory_some_avg10"] = given.signals.values["psi.memory.some_avg10"]
    return [
        Finding(
            "oom_imminent",
            "CRITICAL",
            f"memory {used:.1f}% used (>= {limit:g}%): the OOM killer is close",
            evidence,
        )
    ]


def memory_limit_pressure(given: RuleInput) -> list[Finding]:
    found = _first(given, "cgroup.memory.used_pct")
    if found is None:
        return _absent("memory_limit_pressure", given, "cgroup.memory.used_pct")
    _, used = found
    limit = given.thresholds["oom_memory_pct"]
    if used < limit:
        return []
    return [
        Finding(
            "memory_limit_pressure",
            "WARNING",
            f"cgroup memory {used:.1f}% of its memory.max (>= {limit:g}%)",
            {
                "cgroup": given.signals.context.get("cgroup.path", "?"),
                "used_pct": round(used, 1),
                "threshold_pct": limit,
                **_source(given, "cgroup.memory.used_pct"),
            },
        )
    ]


def memory_high_throttling(given: RuleInput) -> list[Finding]:
    found = _first(given, "cgroup.memory.high_events")
    if found is None:
        return _absent("memory_high_throttling", given, "cgroup.memory.high_events")
    _, events = found
    if events <= 0:
        return []
    return [
        Finding(
            "memory_high_throttling",
            "WARNING",
            f"cgroup throttled at memory.high {int(events)} time(s) in the window",
            {
                "cgroup": given.signals.context.get("cgroup.path", "?"),
                "high_events": int(events),
                **_source(given, "cgroup.memory.high_events"),
            },
        )
    ]


def tcp_retransmit_storm(given: RuleInput) -> list[Finding]:
    found = _first(given, "tcp.retransmit_pct")
    if found is None:
        return _absent("tcp_retransmit_storm", given, "tcp.retransmit_pct")
    _, pct = found
    sent = given.signals.values.get("tcp.out_segs")
    if sent is not None and sent < MIN_TCP_SEGMENTS:
        return []
    limit = given.thresholds["tcp_retransmit_pct"]
    if pct < limit:
        return []
    severity: FindingSeverity = (
        "CRITICAL" if pct >= limit * RETRANSMIT_CRITICAL_FACTOR else "WARNING"
    )
    evidence: dict[str, Any] = {
        "retransmit_pct": round(pct, 2),
        "threshold_pct": limit,
        **_source(given, "tcp.retransmit_pct"),
    }
    if sent is not None:
        evidence["segments_sent"] = int(sent)
    return [
        Finding(
            "tcp_retransmit_storm",
            severity,
            f"{pct:.2f}% of TCP segments retransmitted (>= {limit:g}%)",
            evidence,
        )
    ]


def fd_leak(given: RuleInput) -> list[Finding]:
    names = ("fd.process_growth_per_sec", "fd.growth_per_sec")
    found = _first(given, *names)
    if found is None:
        return _absent("fd_leak", given, *names)
    name, growth = found
    limit = given.thresholds["fd_growth_per_sec"]
    if growth < limit:
        return []
    # Each source lists its own top processes beside its signal.
    top_key = "fd.process_top" if name == "fd.process_growth_per_sec" else "fd.top"
    top = given.signals.context.get(top_key) or []
    evidence: dict[str, Any] = {
        "growth_per_sec": round(growth, 2),
        "threshold_per_sec": limit,
        **_source(given, name),
    }
    if top:
        # Names and numbers only: PIDs stay in the process.
        evidence["processes"] = [
            {"name": str(p.get("name", "?")), "growth_per_sec": p.get("growth_per_sec")}
            for p in top[:5]
        ]
    name = str(top[0].get("name", "?")) if top else "a process"
    return [
        Finding(
            "fd_leak",
            "WARNING",
            f"{name} opens {growth:.1f} file descriptors/s more than it closes",
            evidence,
        )
    ]


def syscall_error_rate(given: RuleInput) -> list[Finding]:
    found = _first(given, "syscall.error_pct")
    if found is None:
        return _absent("syscall_error_rate", given, "syscall.error_pct")
    _, pct = found
    if pct < SYSCALL_ERROR_WARNING_PCT:
        return []
    severity: FindingSeverity = "CRITICAL" if pct >= SYSCALL_ERROR_CRITICAL_PCT else "WARNING"
    return [
        Finding(
            "syscall_error_rate",
            severity,
            f"{pct:.1f}% of syscalls failed",
            {"error_pct": round(pct, 2), **_source(given, "syscall.error_pct")},
        )
    ]


def healthy_system(given: RuleInput) -> list[Finding]:
    """INFO when no other rule found a problem; says how much was actually checked.

    A rule that raised checked nothing: then the title says which failed instead of
    "no problems found" (issue 13).
    """
    if any(f.severity != "INFO" for f in given.earlier):
        return []
    failed = sorted({f.rule for f in given.earlier if "failed" in f.evidence})
    unchecked = sorted({f.rule for f in given.earlier if "absent" in f.evidence})
    if failed:
        title = f"{len(failed)} rule(s) failed ({', '.join(failed)}): not every check ran"
    else:
        title = "no problems found"
    if unchecked:
        title += f" ({len(unchecked)} rule(s) not checked: signals absent)"
    evidence: dict[str, object] = {
        "signals_measured": len(given.signals.values),
        "not_checked": unchecked,
    }
    if failed:
        evidence["rules_failed"] = failed
    return [Finding("healthy_system", "INFO", title, evidence)]


healthy_system.runs_last = True  # type: ignore[attr-defined]

#: Every rule by name, in kerno's order (healthy_system runs last regardless).
RULES: Final[dict[str, RuleFn]] = {
    fn.__name__: fn
    for fn in (
        disk_io_bottleneck,
        disk_io_write_high,
        oom_kill_occurred,
        tcp_retransmit_storm,
        tcp_rtt_degradation,
        scheduler_contention,
        fd_leak,
        syscall_latency_high,
        oom_imminent,
        syscall_error_rate,
        memory_limit_pressure,
        memory_high_throttling,
        healthy_system,
    )
}


def all_rules() -> Iterable[tuple[str, RuleFn]]:
    return RULES.items()
