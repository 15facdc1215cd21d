"""``audit report``: what a log says, summed up for a reviewer, with the verify verdict.

One pass over the records (in chain order, every stream) fills a :class:`Summary`;
:func:`build` adds the verdict of ``audit verify`` and returns a plain dict whose
shape is the ``--json`` output: keys and rows in a fixed order, nothing that
depends on when or where it was made, so two reports of the same files are equal
byte for byte and a diff between two reports shows only what changed.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import orjson
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from kerno_otel import __version__
from kerno_otel.review.controls import CONTROLS, EVIDENCE
from kerno_otel.review.reading import Source, lines_of
from kerno_otel.verify.report import Report
from kerno_otel.verify.verify import verify_streams

#: Time-bucket sizes for the timeline, in seconds: the smallest giving <= _MAX_BUCKETS.
_BUCKETS: Final = (1, 10, 60, 300, 900, 3600, 6 * 3600, 86400, 7 * 86400, 30 * 86400)
_MAX_BUCKETS: Final = 60
#: Prefix lengths of ts kept while counting: second, minute, hour, day.
_LEVELS: Final = (
    (19, "%Y-%m-%dT%H:%M:%S"),
    (16, "%Y-%m-%dT%H:%M"),
    (13, "%Y-%m-%dT%H"),
    (10, "%Y-%m-%d"),
)
_MAX_KEYS: Final = 50_000


class Summary:
    """Counts and lists taken from the records, one record at a time."""

    def __init__(self) -> None:
        self.records = 0
        self.not_records = 0
        self.first_ts: str | None = None
        self.last_ts: str | None = None
        self.by_type: dict[str, Counter[str]] = defaultdict(Counter)
        self.audit_starts = Counter[str]()
        self.lifecycle = Counter[str]()
        self.recoveries: list[dict[str, Any]] = []
        self.rotations = Counter[str]()
        self.file_changes: list[dict[str, Any]] = []
        self.losses: list[dict[str, Any]] = []
        self.auth: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0])
        self.ai: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0, 0, 0, 0])
        self.findings: Counter[tuple[str, str, str, bool]] = Counter()
        self.bpf: dict[str, list[int]] = defaultdict(lambda: [0, 0])
        self.reloads: list[dict[str, Any]] = []
        #: (plugin, hook, error type) -> [records, suppressed].
        self.plugin_errors: dict[tuple[str, str, str], list[int]] = defaultdict(lambda: [0, 0])
        self.level = 0
        self.times: dict[str, Counter[str]] = defaultdict(Counter)

    def add(self, record: dict[str, Any]) -> None:
        self.records += 1
        kind = str(record.get("type"))
        self.by_type[kind][str(record.get("outcome", "unknown"))] += 1
        ts = record.get("ts")
        if isinstance(ts, str):
            if self.first_ts is None or ts < self.first_ts:
                self.first_ts = ts
            if self.last_ts is None or ts > self.last_ts:
                self.last_ts = ts
            self.times[ts[: _LEVELS[self.level][0]]][kind] += 1
            if len(self.times) > _MAX_KEYS and self.level + 1 < len(_LEVELS):
                self._coarsen()
        d = record.get("details")
        if not isinstance(d, dict):
            return
        handler = _HANDLERS.get(kind)
        if handler is not None:
            handler(self, record, d)

    def _coarsen(self) -> None:
        self.level += 1
        width = _LEVELS[self.level][0]
        merged: dict[str, Counter[str]] = defaultdict(Counter)
        for key, counts in self.times.items():
            merged[key[:width]].update(counts)
        self.times = merged


def _audit_start(s: Summary, r: dict[str, Any], d: dict[str, Any]) -> None:
    s.audit_starts["resumed" if d.get("resumed") else "new"] += 1


def _daemon(s: Summary, r: dict[str, Any], d: dict[str, Any]) -> None:
    s.lifecycle[str(r.get("type"))] += 1


def _recover(s: Summary, r: dict[str, Any], d: dict[str, Any]) -> None:
    s.recoveries.append(
        {
            "ts": r.get("ts"),
            "seq": r.get("seq"),
            "file": d.get("file"),
            "bytes": d.get("bytes"),
            "set_aside": d.get("set_aside"),
        }
    )


def _rotate(s: Summary, r: dict[str, Any], d: dict[str, Any]) -> None:
    reason = str(d.get("reason"))
    s.rotations[reason] += 1
    if reason in ("renamed", "removed"):  # someone else did it to the live file
        change = {"ts": r.get("ts"), "seq": r.get("seq"), "reason": reason}
        change["file"] = d.get("old_file")
        if reason == "removed":  # copied back by the writer (nothing lost), or gone
            change["restored"] = d.get("restored") is True
        s.file_changes.append(change)


def _loss(s: Summary, r: dict[str, Any], d: dict[str, Any]) -> None:
    s.losses.append(
        {
            "ts": r.get("ts"),
            "seq": r.get("seq"),
            "reason": d.get("reason"),
            "count": d.get("count"),
            "first_seq": d.get("first_seq"),
            "last_seq": d.get("last_seq"),
            "after_seq": d.get("after_seq"),
            "types": d.get("types", {}),
        }
    )


def _auth(s: Summary, r: dict[str, Any], d: dict[str, Any]) -> None:
    row = s.auth[(str(d.get("endpoint")), str(d.get("reason")))]
    row[0] += 1
    suppressed = d.get("suppressed")
    row[1] += suppressed if isinstance(suppressed, int) else 0


def _ai(s: Summary, r: dict[str, Any], d: dict[str, Any]) -> None:
    row = s.ai[(str(d.get("provider")), str(d.get("model")))]
    row[0] += 1
    row[1] += r.get("outcome") == "failure"
    row[2] += d.get("cache") == "hit"
    tokens = d.get("tokens")
    if isinstance(tokens, dict):
        row[3] += tokens.get("input", 0) if isinstance(tokens.get("input"), int) else 0
        row[4] += tokens.get("output", 0) if isinstance(tokens.get("output"), int) else 0


def _finding(s: Summary, r: dict[str, Any], d: dict[str, Any]) -> None:
    key = (
        str(d.get("rule")),
        str(d.get("severity")),
        str(d.get("sink")),
        d.get("delivered") is True,
    )
    s.findings[key] += 1


def _bpf(s: Summary, r: dict[str, Any], d: dict[str, Any]) -> None:
    s.bpf[str(d.get("program"))][0 if d.get("success") is True else 1] += 1


def _reload(s: Summary, r: dict[str, Any], d: dict[str, Any]) -> None:
    s.reloads.append(
        {
            "ts": r.get("ts"),
            "seq": r.get("seq"),
            "actor": r.get("actor"),
            "source": d.get("source"),
            "uid": d.get("uid"),
            "applied": d.get("applied", []),
            "restart_required": d.get("restart_required", []),
            "changes": d.get("changes", []),
            "error": d.get("error"),
        }
    )


def _plugin_error(s: Summary, r: dict[str, Any], d: dict[str, Any]) -> None:
    # A record folding repeats stands for 1 + suppressed failures, as auth.failure's do.
    row = s.plugin_errors[(str(d.get("plugin")), str(d.get("hook")), str(d.get("error_type")))]
    row[0] += 1
    suppressed = d.get("suppressed")
    row[1] += suppressed if isinstance(suppressed, int) and suppressed > 0 else 0


_HANDLERS: Final[dict[str, Callable[[Summary, dict[str, Any], dict[str, Any]], None]]] = {
    "audit.start": _audit_start,
    "daemon.start": _daemon,
    "daemon.stop": _daemon,
    "daemon.panic": _daemon,
    "audit.recover": _recover,
    "audit.rotate": _rotate,
    "audit.loss": _loss,
    "auth.failure": _auth,
    "ai.call": _ai,
    "finding.emit": _finding,
    "bpf.load": _bpf,
    "config.reload": _reload,
    "plugin.error": _plugin_error,
}


def summarize(source: Source, progress: Callable[[int], None] | None = None) -> Summary:
    summary = Summary()
    loads = orjson.loads
    for _, data in source.contents(progress):
        for line in lines_of(data):
            try:
                record = loads(line)
            except orjson.JSONDecodeError:
                record = None
            if isinstance(record, dict):
                summary.add(record)
            else:
                summary.not_records += 1
    return summary


def verdict_of(reports: list[Report]) -> dict[str, Any]:
    """The verify verdict over every stream: intact or not, and what was not checked."""
    problems = [p.to_json() for r in reports for p in r.problems]
    not_checked = sorted({note for r in reports for note in r.not_checked})
    intact = not problems
    if not intact:
        n = len(problems)
        text = f"DAMAGED: {n} problem{'s' if n != 1 else ''} found by audit verify"
    elif not_checked:
        text = "INTACT, but not everything could be checked (see below)"
    else:
        text = "INTACT: chain, seq, signatures and truncation all checked"
    return {
        "intact": intact,
        "fully_checked": not not_checked,
        "text": text,
        "checkpoints_checked": sum(r.checkpoints_checked for r in reports),
        "problems": problems,
        "not_checked": not_checked,
    }


def _epoch(key: str, level: int) -> int:
    fmt = _LEVELS[level][1]
    return int(datetime.strptime(key, fmt).replace(tzinfo=UTC).timestamp())


def timeline(summary: Summary) -> dict[str, Any]:
    """Events per type per time bucket: at most _MAX_BUCKETS buckets over the log's span."""
    if not summary.times:
        return {"bucket_seconds": 0, "types": [], "buckets": []}
    points = sorted((_epoch(k, summary.level), c) for k, c in summary.times.items())
    start, end = points[0][0], points[-1][0]
    size = next((b for b in _BUCKETS if (end - start) // b + 1 <= _MAX_BUCKETS), _BUCKETS[-1])
    start -= start % size
    count = (end - start) // size + 1
    buckets: list[Counter[str]] = [Counter() for _ in range(count)]
    for at, counts in points:
        buckets[(at - start) // size].update(counts)
    types = sorted({t for c in buckets for t in c})
    return {
        "bucket_seconds": size,
        "types": types,
        "buckets": [
            {
                "start": datetime.fromtimestamp(start + i * size, UTC).strftime(
                    "%Y-%m-%dT%H:%M:%SZ"
                ),
                "counts": {t: c[t] for t in types if c[t]},
            }
            for i, c in enumerate(buckets)
        ],
    }


def build(source: Source, summary: Summary, reports: list[Report]) -> dict[str, Any]:
    """The report as one JSON-ready dict (the ``--json`` output)."""
    s = summary
    by_type = {
        t: {"total": sum(c.values()), **{o: c[o] for o in ("success", "failure", "unknown")}}
        for t, c in sorted(s.by_type.items())
    }
    controls = [
        {
            "id": c.id,
            "framework": c.framework,
            "title": c.title,
            "requirement": c.requirement,
            "evidence": [
                {"type": t, "records": by_type.get(t, {}).get("total", 0), "shows": shows}
                for t, (ids, shows) in EVIDENCE.items()
                if c.id in ids
            ],
        }
        for c in CONTROLS
    ]
    return {
        "report": "kerno-otel audit report",
        "version": __version__,
        "verdict": verdict_of(reports),
        "records": s.records,
        "lines_not_records": s.not_records,
        "time_range": {"first": s.first_ts, "last": s.last_ts},
        "streams": [
            {
                "id": r.stream,
                "files": r.files,
                "records": r.records,
                "first_seq": r.first_seq,
                "last_seq": r.last_seq,
                "intact": r.intact,
            }
            for r in reports
        ],
        "by_type": by_type,
        "restarts": {
            "audit_start_new": s.audit_starts["new"],
            "audit_start_resumed": s.audit_starts["resumed"],
            "daemon_start": s.lifecycle["daemon.start"],
            "daemon_stop": s.lifecycle["daemon.stop"],
            "daemon_panic": s.lifecycle["daemon.panic"],
            "recoveries": s.recoveries,
        },
        "rotations": {
            "by_reason": dict(sorted(s.rotations.items())),
            "by_others": s.file_changes,
        },
        "losses": {
            "records": len(s.losses),
            "lost": sum(x["count"] for x in s.losses if isinstance(x["count"], int)),
            "list": s.losses,
        },
        "auth_failures": [
            {"endpoint": e, "reason": why, "records": n, "suppressed": sup, "attempts": n + sup}
            for (e, why), (n, sup) in sorted(s.auth.items())
        ],
        "ai_calls": [
            {
                "provider": p,
                "model": m,
                "calls": row[0],
                "failures": row[1],
                "cache_hits": row[2],
                "tokens_input": row[3],
                "tokens_output": row[4],
            }
            for (p, m), row in sorted(s.ai.items())
        ],
        "findings": [
            {"rule": rule, "severity": sev, "sink": sink, "delivered": ok, "count": n}
            for (rule, sev, sink, ok), n in sorted(s.findings.items())
        ],
        "bpf_loads": [
            {"program": p, "success": ok, "failure": bad} for p, (ok, bad) in sorted(s.bpf.items())
        ],
        "config_reloads": s.reloads,
        "plugin_errors": [
            {
                "plugin": p,
                "hook": h,
                "error_type": e,
                "records": n,
                "suppressed": sup,
                "count": n + sup,
            }
            for (p, h, e), (n, sup) in sorted(s.plugin_errors.items())
        ],
        "timeline": timeline(s),
        "controls": controls,
    }


def report_of(
    paths: Sequence[str | Path],
    public_key: Ed25519PublicKey | None,
    checkpoints: str | Path | None = None,
    verify_progress: Callable[[int, int], None] | None = None,
    read_progress: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:
    """Verify and summarize the log in ``paths``: the report's dict. The progress
    callbacks get ``(done, total)`` (bytes). Raises
    :class:`~kerno_otel.verify.order.VerifyError` or
    :class:`~kerno_otel.review.reading.ReadError`."""
    reports = verify_streams(
        paths, public_key=public_key, checkpoints=checkpoints, progress=verify_progress
    )
    source = Source.open(paths)
    total = source.total_bytes
    read = None if read_progress is None else lambda done: read_progress(done, total)
    return build(source, summarize(source, read), reports)
