"""What the analyzer may tell a provider (per privacy mode), and the template it falls back to.

``summary`` (the default) sends rule names, severities, titles and numeric
values only; ``redacted`` and ``full`` add the evidence and the signals'
context as text. Which of those passes through the redactor is decided by the
analyzer (analyzer.py), not here: this module only renders.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from typing import Any, Final, Literal

from kerno_otel.findings import Finding, Signals

__all__ = ["SYSTEM_PROMPT", "PrivacyMode", "cache_key", "render_prompt", "template_text"]

PrivacyMode = Literal["full", "redacted", "summary"]

SYSTEM_PROMPT: Final = (
    "You are the diagnosis assistant of kerno, a Linux host observability daemon. "
    "Given the findings of one diagnosis cycle and the signals measured over its window, "
    "explain the most likely root cause, how the findings relate, and the next concrete "
    "steps an operator should take. Be brief (under 200 words). Do not invent measurements; "
    "say when the data is not enough."
)

_ORDER: Final = {"CRITICAL": 0, "WARNING": 1, "INFO": 2}
#: Keys a summary may show next to a number: identifiers, not free text.
_SAFE_KEY: Final = re.compile(r"^[A-Za-z][A-Za-z0-9_.]{0,63}$")
#: At most this many signal values in a prompt (the most a cycle is likely to have).
_MAX_SIGNALS: Final = 200
#: A single evidence or context value longer than this is cut (prompts stay small).
_MAX_VALUE: Final = 500


def cache_key(findings: Sequence[Finding]) -> tuple[str, ...]:
    """The set of ``rule:severity`` pairs, sorted: equal sets share one cached answer."""
    return tuple(sorted({f"{f.rule}:{f.severity}" for f in findings}))


def _ordered(findings: Sequence[Finding]) -> list[Finding]:
    return sorted(findings, key=lambda f: (_ORDER.get(f.severity, 3), f.rule, f.title))


def _number(value: Any) -> str | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return str(value) if isinstance(value, int) else f"{value:.6g}"


def _text(value: Any) -> str:
    if isinstance(value, str):
        text = value
    elif isinstance(value, int | float | bool) or value is None:
        text = str(value)
    else:
        text = json.dumps(value, sort_keys=True, default=str)
    text = " ".join(text.split())
    return text if len(text) <= _MAX_VALUE else text[:_MAX_VALUE] + "…"


def _numbers(values: Mapping[str, Any]) -> list[str]:
    out = []
    for key in sorted(values, key=str):
        number = _number(values[key])
        if number is not None and _SAFE_KEY.match(str(key)):
            out.append(f"{key}={number}")
    return out


def render_prompt(findings: Sequence[Finding], signals: Signals, mode: PrivacyMode) -> str:
    """The user prompt for one cycle. ``summary``: no free-text evidence at all."""
    lines = [f"Diagnosis cycle over a {signals.window_s:g}s window."]
    ordered = _ordered(findings)
    lines.append(f"Findings ({len(ordered)}):" if ordered else "Findings: none.")
    for finding in ordered:
        lines.append(f"- [{finding.severity}] {finding.rule}: {' '.join(finding.title.split())}")
        if mode == "summary":
            evidence = _numbers(finding.evidence)
        else:
            evidence = [f"{key}={_text(finding.evidence[key])}" for key in sorted(finding.evidence)]
        if evidence:
            lines.append("  evidence: " + ", ".join(evidence))
    numbers = _numbers(signals.values)[:_MAX_SIGNALS]
    if numbers:
        lines.append("Signals:")
        lines.extend(f"  {item}" for item in numbers)
    absent = [name for name in sorted(signals.absent) if _SAFE_KEY.match(name)]
    if absent:
        lines.append("Not measured: " + ", ".join(absent))
    if mode != "summary" and signals.context:
        lines.append("Context:")
        lines.extend(f"  {key}={_text(signals.context[key])}" for key in sorted(signals.context))
    return "\n".join(lines) + "\n"


#: One next step per kerno rule, for the template (deterministic, no provider needed).
_HINTS: Final[Mapping[str, str]] = {
    "disk_io_bottleneck": "check the busiest devices and the processes queueing I/O on them",
    "disk_io_write_high": "look for write-heavy processes, log floods or a runaway fsync",
    "oom_kill_occurred": "check which process was killed and whether its memory limit fits",
    "oom_imminent": "free memory or raise limits before the OOM killer picks a victim",
    "tcp_retransmit_storm": "check packet loss on the path, NIC errors and congestion",
    "tcp_rtt_degradation": "check the network path latency and the peers involved",
    "scheduler_contention": "look for CPU saturation, noisy neighbours or too many threads",
    "fd_leak": "find the process whose open file descriptors keep growing",
    "syscall_latency_high": "find the slow system calls and what they wait on",
    "syscall_error_rate": "find the failing system calls and their error codes",
    "memory_limit_pressure": "check the cgroup's memory.max against its working set",
    "memory_high_throttling": "the cgroup is throttled at memory.high; raise it or shrink usage",
}


def template_text(findings: Sequence[Finding]) -> str:
    """The fallback analysis: a deterministic summary of the findings, no provider needed."""
    ordered = _ordered(findings)
    problems = [f for f in ordered if f.severity != "INFO"]
    if not problems:
        return "No problems found in this cycle.\n"
    counts = {
        sev: sum(1 for f in problems if f.severity == sev)
        for sev in ("CRITICAL", "WARNING")
        if any(f.severity == sev for f in problems)
    }
    summary = ", ".join(f"{n} {sev.lower()}" for sev, n in counts.items())
    noun = "finding" if len(problems) == 1 else "findings"
    lines = [f"{len(problems)} {noun} ({summary}):"]
    for finding in problems:
        line = f"- {finding.severity} {finding.rule}: {' '.join(finding.title.split())}"
        hint = _HINTS.get(finding.rule)
        lines.append(f"{line} ({hint})" if hint else line)
    if len(problems) > 1:
        lines.append(f"Start with {problems[0].rule}: it is the most severe.")
    return "\n".join(lines) + "\n"
