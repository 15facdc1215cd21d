"""Redaction of hostile free text against ordinary text of the same size, in one run.

    python benchmarks/bench_redact.py --kb 100

A producer controls the error strings the redactor scrubs (a BPF load error, an LLM
provider's HTTP error, a failed subprocess's argv), so one crafted string must not
stall the writer. Times ``Redactor.redact_text`` (and the leak check the validator's
reasons use, ``find_leak``) on strings of --kb kilobytes built to make a regex try
every position and scan far from each ("'-u'-u'-u…", "eyJeyJ…", "cookie:cookie:…"),
against the baseline of an ordinary BPF error line repeated to the same size. The
best of --repeat runs counts. Each hostile case is also timed at half the size:
``growth`` (time at full size / time at half) is ~2 for linear work and ~4 for
quadratic. The last line printed is one JSON object; ``worst_ratio`` is the slowest
hostile case over the baseline, ``worst_growth`` the largest growth.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable

from kerno_otel.records.patterns import find_leak
from kerno_otel.records.redact import Redactor

#: Units repeated to build the hostile strings; each made a regex quadratic once, or
#: is shaped like one that did. The tail gives the quick tests a "." and an "=".
HOSTILE: dict[str, str] = {
    "argv_u": "'-u",
    "argv_u_quote": "'-u'x",
    "slash_p": "/-pX",
    "comma_p": ",-p",
    "json_u": ',"-u',
    "json_p": ',"-p',
    "login_words": "-u x ",
    "flag_quote": "--password '",
    "jwt_heads": "eyJ",
    "jwt_glued": "_eyJ",
    "cookies": "cookie:",
    "kv_quotes": "password='",
    "auth_dict": "'authorization': '",
    "ipv6ish": "1:",
    "dotted": "1.",
    "b64": "aB1/",
}
_TAIL = " x.y a=b"
_BASELINE = (
    "libbpf: prog 'handle_exit': failed to load: -13 (Permission denied); "
    "attach raw_syscalls:sys_enter at /sys/kernel/tracing/events; "
)


def build(unit: str, size: int) -> str:
    return unit * (size // len(unit)) + _TAIL


def best(fn: Callable[[str], object], text: str, repeat: int) -> float:
    fastest = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        fn(text)
        fastest = min(fastest, time.perf_counter() - start)
    return fastest


def redact(text: str) -> object:
    # A fresh redactor: its cache of clean strings must not answer for it.
    return Redactor().redact_text(text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kb", type=float, default=100.0, help="size of each string")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    size = int(args.kb * 1000)
    baseline = best(redact, build(_BASELINE, size), args.repeat)
    cases: dict[str, dict[str, float]] = {}
    for name, unit in HOSTILE.items():
        full = best(redact, build(unit, size), args.repeat)
        half = best(redact, build(unit, size // 2), args.repeat)
        leak = best(find_leak, build(unit, size), args.repeat)
        cases[name] = {
            "redact_ms": round(full * 1000, 2),
            "find_leak_ms": round(leak * 1000, 2),
            "growth": round(full / half, 2) if half > 0 else 0.0,
        }
        print(
            f"{name:14s} redact {full * 1000:8.2f} ms  find_leak {leak * 1000:8.2f} ms  "
            f"growth x{cases[name]['growth']}",
            file=sys.stderr,
        )
    worst = max(cases, key=lambda n: cases[n]["redact_ms"])
    result = {
        "kb": args.kb,
        "baseline_ms": round(baseline * 1000, 2),
        "worst_case": worst,
        "worst_ms": cases[worst]["redact_ms"],
        "worst_ratio": round(cases[worst]["redact_ms"] / (baseline * 1000), 2)
        if baseline > 0
        else 0.0,
        "worst_growth": max(c["growth"] for c in cases.values()),
        "cases": cases,
    }
    print(
        f"baseline (ordinary BPF error text) {baseline * 1000:.2f} ms; worst {worst} "
        f"{result['worst_ms']} ms (x{result['worst_ratio']})",
        file=sys.stderr,
    )
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
