"""Hostile producers (issue 11): whatever a producer hands ``AuditLog.emit``, in both pipelines.

Hypothesis builds batches of emits with arbitrary types, actors, severities, outcomes,
trace and span ids and ``details`` (nested, huge ints, NaN, bytes, Mappings whose
iteration raises, secrets embedded in values, keys, actors and type names). For every
batch: ``emit`` never raises; every line in the file validates against the schema and
the chain is whole; no secret of the input is in the file; and every record is either
written or counted by an ``audit.loss`` (``validation_failed``): written + refused ==
emitted, exactly.
"""

from __future__ import annotations

import io
import math
import tempfile
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import orjson
import pytest
from helpers import check_chain, stream_lines
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kerno_otel import AuditConfig, AuditLog
from kerno_otel.records.schema import SchemaSet
from kerno_otel.records.validate import RecordValidator

#: Examples per pipeline: each opens and closes a log (two child processes in process
#: mode), so the suite stays well under a minute on the CI machine kind.
EXAMPLES = {"thread": 60, "process": 20}

_VALIDATOR = RecordValidator(SchemaSet.builtin())
_FIGURES: dict[str, dict[str, float]] = {}


class HostileMapping(Mapping[str, Any]):
    """A Mapping that raises wherever it is looked at (iteration, length, lookups)."""

    def __init__(self, where: str) -> None:
        self.where = where

    def __getitem__(self, key: str) -> Any:
        raise RuntimeError(f"hostile __getitem__ password=hunter2-{self.where}")

    def __iter__(self) -> Iterator[str]:
        if self.where == "iter":
            raise RuntimeError("hostile __iter__ password=hunter2-iter")
        yield "program"

    def __len__(self) -> int:
        if self.where == "len":
            raise RuntimeError("hostile __len__")
        return 1


# --- secrets: (text, needles that must never reach the file) --------------------------------

_n = st.integers(min_value=100_000, max_value=999_999)


@st.composite
def secret(draw: st.DrawFn) -> tuple[str, tuple[str, ...]]:
    n = draw(_n)
    forms = [
        (f"password=hunter2x{n}", (f"hunter2x{n}",)),
        (f"Authorization: Bearer tok{n}abcdefgh", (f"tok{n}abcdefgh",)),
        (f"sk-live{n}abcdefghijklmnop", (f"sk-live{n}",)),
        (
            f"AKIAIOSFODNN7EX{n % 100_000:05d} wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAM{n}",
            (f"AKIAIOSFODNN7EX{n % 100_000:05d}", f"bPxRfiCYEXAM{n}"),
        ),
        (f"aws_secret_access_key=Zz{n}Secret", (f"Zz{n}Secret",)),
        (
            f"https://hooks.slack.com/services/T0{n}/B0{n}/slackTok{n}",
            (f"slackTok{n}", f"T0{n}"),
        ),
        (f"https://user:pw{n}@db.internal/x", (f"pw{n}",)),
        (f"routing_key={n}ffffabcd", (f"{n}ffffabcd",)),
        (f"cannot open /etc/shadow{n}", (f"shadow{n}",)),
        (f"copied /tmp/payroll-{n}.csv", (f"payroll-{n}",)),
        (f"/home/alice{n}/notes", (f"alice{n}",)),
        (
            f"peer 10.{n % 250}.{n % 7}.{n % 200 + 1} refused",
            (f"10.{n % 250}.{n % 7}.{n % 200 + 1}",),
        ),
        (f"child pid={n} died", (f"pid={n}",)),
        (f"mail bob{n}@example.com", (f"bob{n}@example",)),
    ]
    return draw(st.sampled_from(forms))


_plain = st.text(alphabet="abcdefgh ijk_-.,;", max_size=12)


@st.composite
def text_with_secret(draw: st.DrawFn, needles: list[str]) -> str:
    text, found = draw(secret())
    needles.extend(found)
    return f"{draw(_plain)} {text} {draw(_plain)}"


def _scalars(needles: list[str]) -> st.SearchStrategy[Any]:
    return st.one_of(
        st.none(),
        st.booleans(),
        st.integers(min_value=-(2**80), max_value=2**80),
        st.floats(allow_nan=True, allow_infinity=True),
        st.text(max_size=20),
        st.binary(max_size=10),
        text_with_secret(needles),
    )


def _details(needles: list[str]) -> st.SearchStrategy[Any]:
    nested = st.recursive(
        _scalars(needles),
        lambda inner: st.one_of(
            st.lists(inner, max_size=3),
            st.dictionaries(
                st.one_of(st.text(max_size=8), text_with_secret(needles)), inner, max_size=3
            ),
        ),
        max_leaves=8,
    )
    bpf = st.fixed_dictionaries(
        {
            "program": st.sampled_from(["syscall_latency", "tcp_monitor"]),
            "attach": st.just(["raw_syscalls:sys_enter"]),
            "success": st.just(False),
            "error": text_with_secret(needles),
        }
    )
    return st.one_of(
        bpf,  # valid: the secret must be redacted, the record written
        bpf.map(lambda d: {**d, "extra": 2**70}),
        st.dictionaries(st.text(max_size=10), nested, max_size=4),
        st.sampled_from(["iter", "len", "get"]).map(HostileMapping),
        st.none(),
        nested,
    )


_TYPES = st.one_of(
    st.sampled_from(
        [
            "bpf.load",
            "bpf.load",
            "config.reload",
            "plugin.load",
            "audit.loss",
            "audit.rotate",
            "audit.start",
            "finding.emit",
            "Evil",
            "",
            "no such.type",
        ]
    ),
    st.none(),
    st.integers(),
    st.lists(st.integers(), max_size=2),
    st.text(max_size=12),
)
_IDS = st.one_of(
    st.none(),
    st.integers(min_value=-(2**70), max_value=2**200),
    st.text(max_size=40),
    st.floats(allow_nan=True),
)


@st.composite
def valid_call(draw: st.DrawFn, needles: list[str]) -> dict[str, Any]:
    """A record that may be written: its secrets must be redacted on the way."""
    call: dict[str, Any] = {
        "type": "bpf.load",
        "details": {
            "program": draw(st.one_of(st.just("fd_track"), text_with_secret(needles))),
            "attach": draw(st.lists(text_with_secret(needles), max_size=2)),
            "success": False,
            "error": draw(text_with_secret(needles)),
        },
        "outcome": draw(st.sampled_from(["success", "failure", "unknown"])),
    }
    if draw(st.booleans()):
        call["severity"] = draw(st.sampled_from(["INFO", "WARN", "ERROR", "FATAL"]))
    if draw(st.booleans()):
        call["trace_id"] = draw(st.integers(min_value=1, max_value=2**128 - 1))
        call["span_id"] = draw(st.integers(min_value=1, max_value=2**64 - 1))
    if draw(st.booleans()):
        call["cycle_id"] = "cycle-20261127-180000"
    return call


@st.composite
def emit_call(draw: st.DrawFn, needles: list[str]) -> dict[str, Any]:
    if draw(st.integers(min_value=0, max_value=2)) == 0:
        return draw(valid_call(needles))
    call: dict[str, Any] = {"type": draw(_TYPES)}
    if draw(st.integers(min_value=0, max_value=5)) == 0:
        call["type"] = f"evil {draw(text_with_secret(needles))}"
    call["details"] = draw(_details(needles))
    options: dict[str, st.SearchStrategy[Any]] = {
        "actor": st.one_of(
            st.sampled_from(["bpf/loader", "config/SIGHUP", "audit/writer", ""]),
            st.text(max_size=12),
            st.integers(),
            text_with_secret(needles).map(lambda t: "config/" + t),
        ),
        "severity": st.one_of(
            st.sampled_from(["INFO", "WARN", "ERROR", "FATAL", "DEBUG", "info"]),
            st.text(max_size=6),
            st.lists(st.integers(), max_size=1),
            st.integers(),
        ),
        "outcome": st.one_of(
            st.sampled_from(["success", "failure", "unknown", "maybe"]), st.integers(), st.none()
        ),
        "trace_id": _IDS,
        "span_id": _IDS,
        "cycle_id": st.one_of(st.text(max_size=20), text_with_secret(needles), st.integers()),
    }
    for name, strategy in options.items():
        if draw(st.booleans()):
            call[name] = draw(strategy)
    return call


@st.composite
def batch(draw: st.DrawFn) -> tuple[list[dict[str, Any]], list[str]]:
    needles: list[str] = []
    calls = draw(st.lists(emit_call(needles), min_size=1, max_size=20))
    return calls, needles


def _run_batch(pipeline: str, calls: list[dict[str, Any]], needles: list[str]) -> None:
    figures = _FIGURES.setdefault(
        pipeline, {"examples": 0, "emits": 0, "lines": 0, "written": 0, "refused": 0, "s": 0.0}
    )
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="kerno-hostile-") as tmp:
        live = Path(tmp) / "kerno-audit.jsonl"
        log = AuditLog(AuditConfig(file_path=str(live), pipeline=pipeline), stderr=io.StringIO())
        try:
            for call in calls:
                arguments = dict(call)
                log.emit(arguments.pop("type"), **arguments)  # never raises
        finally:
            log.close()
        data = b"".join(path.read_bytes() for path in Path(tmp).glob("kerno-audit*.jsonl"))
        lines = stream_lines(live)
    records = [orjson.loads(line) for line in lines]
    for line, record in zip(lines, records, strict=True):
        assert _VALIDATOR.check(record) is None, line
    assert check_chain(lines) == []
    for needle in needles:
        assert needle.encode() not in data, needle
    written = sum(1 for r in records if not r["type"].startswith("audit."))
    refused = sum(
        r["details"]["count"]
        for r in records
        if r["type"] == "audit.loss" and r["details"]["reason"] == "validation_failed"
    )
    assert written + refused == len(calls), (written, refused, calls)
    assert not any(
        r["type"] == "audit.loss" and r["details"]["reason"] != "validation_failed" for r in records
    )
    figures["examples"] += 1
    figures["emits"] += len(calls)
    figures["lines"] += len(lines)
    figures["written"] += written
    figures["refused"] += refused
    figures["s"] += time.monotonic() - started


def _test_for(pipeline: str) -> Any:
    @settings(
        max_examples=EXAMPLES[pipeline],
        deadline=None,
        derandomize=True,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(batch())
    def run(generated: tuple[list[dict[str, Any]], list[str]]) -> None:
        calls, needles = generated
        _run_batch(pipeline, calls, needles)

    return run


test_hostile_producers_thread = _test_for("thread")
test_hostile_producers_process = _test_for("process")


def test_floats_and_hostile_mappings_are_refused_not_raised(tmp_path: Path) -> None:
    # A fixed batch, so the pieces the suite relies on are certainly exercised.
    calls: list[dict[str, Any]] = [
        {"type": "bpf.load", "details": HostileMapping("iter")},
        {"type": "bpf.load", "details": {"program": "p", "attach": [], "success": math.nan}},
        {
            "type": "bpf.load",
            "details": {"program": "p", "attach": [], "success": True, "x": b"\0"},
        },
        {"type": "audit.loss", "details": {"count": 1}},
        {"type": "bpf.load", "details": {"program": "p", "attach": [], "success": True}},
    ]
    for pipeline in ("thread", "process"):
        _run_batch(pipeline, calls, [])


@pytest.fixture(scope="module", autouse=True)
def _report_figures() -> Iterator[None]:
    yield
    for pipeline, f in sorted(_FIGURES.items()):
        print(
            f"\nhostile producers [{pipeline}]: {f['examples']:.0f} batches, "
            f"{f['emits']:.0f} emits, "
            f"{f['lines']:.0f} lines checked, {f['written']:.0f} written, "
            f"{f['refused']:.0f} refused (each in an audit.loss), {f['s']:.1f} s"
        )
