"""``audit report --html``: the report as one self-contained page.

No script, no font, no image, no stylesheet from anywhere: styles are inline, the
timeline is inline SVG, and a Content-Security-Policy (``default-src 'none'``) tells
the browser to fetch nothing, so the page works from a USB stick on a machine with no
network and cannot call home. Every value from the log is HTML-escaped.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from html import escape
from typing import Any, Final

from kerno_otel.review.tables import change_reason, change_text

CSP: Final = "default-src 'none'; style-src 'unsafe-inline'"

_PALETTE: Final = (
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
    "#7f7f7f", "#bcbd22", "#17becf", "#393b79", "#637939", "#8c6d31", "#843c39",
    "#7b4173", "#3182bd", "#e6550d", "#31a354",
)  # fmt: skip

_STYLE: Final = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:2em auto;
max-width:70em;color:#1b1b1b;padding:0 1em}
h1{font-size:1.6em}h2{font-size:1.2em;margin-top:2em;border-bottom:1px solid #ccc}
.verdict{padding:1em 1.2em;border-radius:6px;font-size:1.3em;font-weight:bold}
.intact{background:#e3f6e5;border:2px solid #2e7d32;color:#1b5e20}
.damaged{background:#fdecea;border:2px solid #c62828;color:#b71c1c}
.note{font-size:.8em;font-weight:normal;margin:.4em 0 0}
table{border-collapse:collapse;margin:.6em 0;font-size:.9em}
th,td{border:1px solid #ccc;padding:.25em .6em;text-align:left;vertical-align:top}
th{background:#f3f3f3}td.n{text-align:right;font-variant-numeric:tabular-nums}
caption{text-align:left;font-weight:bold;padding:.3em 0}
.legend span{display:inline-block;margin-right:1em;font-size:.85em}
.legend i{display:inline-block;width:.9em;height:.9em;margin-right:.3em;vertical-align:middle}
.empty{color:#777;font-style:italic}
code{background:#f3f3f3;padding:0 .2em}
"""


def _cell(value: Any) -> str:
    if value is None:
        return "<td></td>"
    if isinstance(value, bool):
        return f"<td>{'yes' if value else 'no'}</td>"
    if isinstance(value, int):
        return f'<td class="n">{value:,}</td>'
    return f"<td>{escape(str(value))}</td>"


def _table(
    table_id: str, caption: str, columns: Sequence[str], rows: Iterable[Sequence[Any]]
) -> str:
    body = "".join("<tr>" + "".join(_cell(v) for v in row) + "</tr>" for row in rows)
    head = "".join(f"<th>{escape(c)}</th>" for c in columns)
    if not body:
        body = f'<tr><td class="empty" colspan="{len(columns)}">none in this log</td></tr>'
    return (
        f'<table id="{table_id}"><caption>{escape(caption)}</caption>'
        f"<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
    )


#: The least height, in pixels, of a type's segment in a bar.
MIN_SEGMENT = 3


def _chart(timeline: dict[str, Any]) -> str:
    """Stacked bars: one per time bucket, one colour per event type."""
    buckets, types = timeline["buckets"], timeline["types"]
    if not buckets:
        return '<p class="empty">no records</p>'
    width, height, left, bottom = 900, 260, 50, 40
    top = max(sum(b["counts"].values()) for b in buckets) or 1
    slot = (width - left - 10) / len(buckets)
    bar = min(max(slot * 0.8, 1.0), 48.0)
    colour = {t: _PALETTE[i % len(_PALETTE)] for i, t in enumerate(types)}
    parts = [
        f'<svg id="timeline" width="{width}" '
        f'height="{height}" viewBox="0 0 {width} {height}" role="img" '
        f'aria-label="records per event type over time">',
        f'<line x1="{left}" y1="{height - bottom}" x2="{width}" y2="{height - bottom}" '
        'stroke="#444"/>',
        f'<text x="{left - 6}" y="14" font-size="11" text-anchor="end">{top:,}</text>',
        f'<text x="{left - 6}" y="{height - bottom}" font-size="11" text-anchor="end">0</text>',
    ]
    # Every type present in a bucket gets at least MIN_SEGMENT whole pixels, so a single
    # audit.loss among thousands of records is still seen; the scale leaves room for that.
    avail = height - bottom - 10
    scale = max(avail - MIN_SEGMENT * len(types), avail / 2) / top
    for i, b in enumerate(buckets):
        x = left + i * slot + (slot - bar) / 2
        y = height - bottom
        for t in types:
            n = b["counts"].get(t, 0)
            if not n:
                continue
            h = max(round(n * scale), MIN_SEGMENT)
            y -= h
            parts.append(
                f'<rect class="bar" x="{x:.1f}" y="{y}" width="{bar:.1f}" height="{h}" '
                f'fill="{colour[t]}"><title>{escape(b["start"])} {escape(t)}: {n:,}'
                "</title></rect>"
            )
    for i in (0, len(buckets) - 1):
        anchor = "start" if i == 0 else "end"
        x = left + i * slot + (slot if i else 0)
        parts.append(
            f'<text x="{x:.1f}" y="{height - bottom + 16}" font-size="11" '
            f'text-anchor="{anchor}">{escape(buckets[i]["start"])}</text>'
        )
    parts.append("</svg>")
    legend = "".join(
        f'<span><i style="background:{colour[t]}"></i>{escape(t)}</span>' for t in types
    )
    per = timeline["bucket_seconds"]
    return (
        "".join(parts)
        + f'<p class="legend">{legend}</p><p class="note">One bar per {per:,} s (UTC).</p>'
    )


def _controls(controls: list[dict[str, Any]]) -> str:
    """One block of rows per control: its name and requirement once, then each type."""
    head = "".join(
        f"<th>{c}</th>"
        for c in ("Control", "Requirement", "Event type", "Records", "What it shows")
    )
    rows = []
    for control in controls:
        evidence = control["evidence"]
        span = max(len(evidence), 1)
        lead = (
            f'<td rowspan="{span}"><b>{escape(control["id"])}</b><br>'
            f"{escape(control['title'])}</td>"
            f'<td rowspan="{span}">{escape(control["requirement"])}</td>'
        )
        for i, e in enumerate(evidence):
            cells = _cell(e["type"]) + _cell(e["records"]) + _cell(e["shows"])
            rows.append(f"<tr>{lead if i == 0 else ''}{cells}</tr>")
    return (
        '<table id="controls"><caption>Event types and the controls they evidence</caption>'
        f"<thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"
    )


def _range(a: Any, b: Any) -> str:
    return f"{a}-{b}" if isinstance(a, int) and isinstance(b, int) else ""


def render(report: dict[str, Any]) -> str:
    """The whole page for the report dict of :func:`kerno_otel.review.report.build`."""
    v = report["verdict"]
    span = report["time_range"]
    notes = "".join(f'<p class="note">not checked: {escape(n)}</p>' for n in v["not_checked"])
    problems = _table(
        "problems",
        "Problems found by audit verify",
        ["File", "Line", "Seq", "Kind", "Explanation"],
        ((p["file"], p["line"], p["seq"], p["kind"], p["explanation"]) for p in v["problems"]),
    )
    r = report["restarts"]
    losses = report["losses"]
    sections = [
        f'<div id="verdict" class="verdict {"intact" if v["intact"] else "damaged"}">'
        f"{escape(v['text'])}{notes}</div>",
        f"<p>{report['records']:,} records from <code>{escape(str(span['first']))}</code> to "
        f"<code>{escape(str(span['last']))}</code> in {len(report['streams'])} stream(s), "
        f"{v['checkpoints_checked']:,} signed checkpoints checked.</p>",
        "<h2>How to read this page</h2><p>Each line of a kerno-otel audit log is one "
        "privileged action of the monitoring daemon, linked to the line before by a SHA-256 "
        "hash and periodically signed. The verdict above is that of <code>kerno-otel audit "
        "verify</code>: INTACT means no line was changed, added, removed or reordered and, "
        "when a key was given, the log was not cut short. The tables count what the log "
        "records; the last section maps event types to the controls they evidence.</p>",
        problems if v["problems"] else "",
        "<h2>Events over time</h2>",
        _chart(report["timeline"]),
        "<h2>Summary</h2>",
        _table(
            "streams",
            "Streams",
            ["Stream id", "Files", "Records", "Seqs", "Intact"],
            (
                (
                    s["id"],
                    len(s["files"]),
                    s["records"],
                    _range(s["first_seq"], s["last_seq"]),
                    s["intact"],
                )
                for s in report["streams"]
            ),
        ),
        _table(
            "by-type",
            "Records by type and outcome",
            ["Type", "Total", "Success", "Failure", "Unknown"],
            (
                (t, c["total"], c["success"], c["failure"], c["unknown"])
                for t, c in report["by_type"].items()
            ),
        ),
        _table(
            "restarts",
            "Restarts and crashes",
            ["Event", "Count"],
            [
                ("audit log opened (new stream)", r["audit_start_new"]),
                ("audit log resumed", r["audit_start_resumed"]),
                ("daemon.start", r["daemon_start"]),
                ("daemon.stop", r["daemon_stop"]),
                ("daemon.panic", r["daemon_panic"]),
                ("audit.recover (torn tail repaired after a crash)", len(r["recoveries"])),
            ],
        ),
        _table(
            "recoveries",
            "Crash recoveries (audit.recover)",
            ["Time", "Seq", "File", "Bytes set aside", "Kept in"],
            ((x["ts"], x["seq"], x["file"], x["bytes"], x["set_aside"]) for x in r["recoveries"]),
        ),
        _table(
            "file-changes",
            "Live file renamed or removed by someone else (audit.rotate reason renamed, removed)",
            ["Time", "Seq", "Reason", "File"],
            (
                (x["ts"], x["seq"], change_reason(x), x["file"])
                for x in report["rotations"]["by_others"]
            ),
        ),
        _table(
            "losses",
            f"Losses: {losses['lost']:,} records lost, owned up to in "
            f"{losses['records']} audit.loss records",
            ["Time", "Seq", "Reason", "Count", "Lost seqs", "After seq"],
            (
                (
                    x["ts"],
                    x["seq"],
                    x["reason"],
                    x["count"],
                    _range(x["first_seq"], x["last_seq"]),
                    x["after_seq"],
                )
                for x in losses["list"]
            ),
        ),
        "<h2>Activity</h2>",
        _table(
            "auth-failures",
            "Auth failures (suppressed: attempts folded in by rate limiting)",
            ["Endpoint", "Reason", "Records", "Suppressed", "Attempts"],
            (
                (a["endpoint"], a["reason"], a["records"], a["suppressed"], a["attempts"])
                for a in report["auth_failures"]
            ),
        ),
        _table(
            "ai-calls",
            "AI calls by provider and model",
            ["Provider", "Model", "Calls", "Failures", "Cache hits", "Tokens in", "Tokens out"],
            (
                (
                    a["provider"],
                    a["model"],
                    a["calls"],
                    a["failures"],
                    a["cache_hits"],
                    a["tokens_input"],
                    a["tokens_output"],
                )
                for a in report["ai_calls"]
            ),
        ),
        _table(
            "findings",
            "Findings by rule, sink and delivery",
            ["Rule", "Severity", "Sink", "Delivered", "Count"],
            (
                (f["rule"], f["severity"], f["sink"], f["delivered"], f["count"])
                for f in report["findings"]
            ),
        ),
        _table(
            "bpf-loads",
            "BPF program loads",
            ["Program", "Succeeded", "Failed"],
            ((b["program"], b["success"], b["failure"]) for b in report["bpf_loads"]),
        ),
        _table(
            "config-reloads",
            "Configuration reloads: who and what changed",
            ["Time", "By", "Uid", "Changes", "Applied", "Needs restart", "Error"],
            (
                (
                    c["ts"],
                    c["actor"],
                    c["uid"],
                    change_text(c["changes"]),
                    ", ".join(map(str, c["applied"] or [])),
                    ", ".join(map(str, c["restart_required"] or [])),
                    c["error"],
                )
                for c in report["config_reloads"]
            ),
        ),
        _table(
            "plugin-errors",
            "Plugin errors (suppressed: identical repeats folded into a record)",
            ["Plugin", "Hook", "Error", "Records", "Suppressed", "Failures"],
            (
                (p["plugin"], p["hook"], p["error_type"], p["records"], p["suppressed"], p["count"])
                for p in report["plugin_errors"]
            ),
        ),
        "<h2>Controls evidenced</h2>",
        _controls(report["controls"]),
        f'<p class="note">{escape(report["report"])} {escape(report["version"])}</p>',
    ]
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">'
        '<meta name="referrer" content="no-referrer">'
        "<title>kerno-otel audit report</title>"
        f"<style>{_STYLE}</style></head><body><h1>Audit log report</h1>"
        + "\n".join(s for s in sections if s)
        + "</body></html>\n"
    )
