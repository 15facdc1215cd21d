"""``audit report`` and ``audit query`` on a terminal: rich tables from the report's dict."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import orjson
from rich.console import Console
from rich.table import Table


def _table(title: str, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> Table:
    table = Table(title=title, title_justify="left", title_style="bold")
    for i, column in enumerate(columns):
        table.add_column(column, justify="left" if i == 0 or column.islower() else "right")
    for row in rows:
        table.add_row(*("" if v is None else f"{v:,}" if type(v) is int else str(v) for v in row))
    return table


def _range(seq_first: Any, seq_last: Any) -> str:
    if isinstance(seq_first, int) and isinstance(seq_last, int):
        return f"{seq_first}-{seq_last}"
    return ""


def render_report(report: dict[str, Any], console: Console) -> None:
    """Every section of the report, one table each, verdict first."""
    verdict = report["verdict"]
    style = "bold green" if verdict["intact"] else "bold red"
    console.print(f"[{style}]{verdict['text']}[/]")
    for note in verdict["not_checked"]:
        console.print(f"  not checked: {note}")
    for p in verdict["problems"][:20]:
        console.print(f"  {p['file']}:{p['line']}: seq {p['seq']}: {p['kind']}: {p['explanation']}")
    span = report["time_range"]
    console.print(
        f"{report['records']:,} records from {span['first']} to {span['last']}, "
        f"{len(report['streams'])} stream(s)"
    )
    console.print(
        _table(
            "Streams",
            ["Stream", "Files", "Records", "Seqs", "Intact"],
            (
                (
                    s["id"],
                    len(s["files"]),
                    s["records"],
                    _range(s["first_seq"], s["last_seq"]),
                    "yes" if s["intact"] else "NO",
                )
                for s in report["streams"]
            ),
        )
    )
    console.print(
        _table(
            "Records by type and outcome",
            ["Type", "Total", "Success", "Failure", "Unknown"],
            (
                (t, c["total"], c["success"], c["failure"], c["unknown"])
                for t, c in report["by_type"].items()
            ),
        )
    )
    r = report["restarts"]
    console.print(
        _table(
            "Restarts and crashes",
            ["Event", "Count"],
            [
                ("audit log opened (new stream)", r["audit_start_new"]),
                ("audit log resumed", r["audit_start_resumed"]),
                ("daemon.start", r["daemon_start"]),
                ("daemon.stop", r["daemon_stop"]),
                ("daemon.panic", r["daemon_panic"]),
                ("audit.recover (torn tail repaired)", len(r["recoveries"])),
            ],
        )
    )
    console.print(
        _table(
            "Live file renamed or removed by someone else (audit.rotate)",
            ["Seq", "Reason", "File"],
            ((x["seq"], change_reason(x), x["file"]) for x in report["rotations"]["by_others"]),
        )
    )
    losses = report["losses"]
    console.print(
        _table(
            f"Losses ({losses['lost']:,} records lost in {losses['records']} audit.loss records)",
            ["Seq", "Reason", "Count", "Lost seqs", "After seq"],
            (
                (
                    x["seq"],
                    x["reason"],
                    x["count"],
                    _range(x["first_seq"], x["last_seq"]),
                    x["after_seq"],
                )
                for x in losses["list"]
            ),
        )
    )
    console.print(
        _table(
            "Auth failures",
            ["Endpoint", "reason", "Records", "Suppressed", "Attempts"],
            (
                (a["endpoint"], a["reason"], a["records"], a["suppressed"], a["attempts"])
                for a in report["auth_failures"]
            ),
        )
    )
    console.print(
        _table(
            "AI calls",
            ["Provider", "model", "Calls", "Failures", "Cache hits", "Tokens in", "Tokens out"],
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
        )
    )
    console.print(
        _table(
            "Findings",
            ["Rule", "severity", "sink", "delivered", "Count"],
            (
                (f["rule"], f["severity"], f["sink"], "yes" if f["delivered"] else "no", f["count"])
                for f in report["findings"]
            ),
        )
    )
    console.print(
        _table(
            "BPF loads",
            ["Program", "Success", "Failure"],
            ((b["program"], b["success"], b["failure"]) for b in report["bpf_loads"]),
        )
    )
    console.print(
        _table(
            "Config reloads",
            ["Time", "by", "uid", "changed", "Error"],
            (
                (c["ts"], c["actor"], c["uid"], change_text(c["changes"]), c["error"])
                for c in report["config_reloads"]
            ),
        )
    )
    console.print(
        _table(
            "Plugin errors",
            ["Plugin", "hook", "error", "Records", "Suppressed", "Failures"],
            (
                (p["plugin"], p["hook"], p["error_type"], p["records"], p["suppressed"], p["count"])
                for p in report["plugin_errors"]
            ),
        )
    )
    console.print(
        _table(
            "Controls evidenced",
            ["Control", "title", "Records", "event types"],
            (
                (
                    c["id"],
                    c["title"],
                    sum(e["records"] for e in c["evidence"]),
                    ", ".join(e["type"] for e in c["evidence"] if e["records"]),
                )
                for c in report["controls"]
            ),
        )
    )


def change_reason(change: dict[str, Any]) -> str:
    """What became of a live file someone else renamed or removed, for a table cell."""
    reason = str(change["reason"])
    if reason == "removed":
        return "removed, copied back" if change.get("restored") else "removed, records lost"
    return reason


def change_text(changes: Any) -> str:
    """``field: before -> after`` per change of a config.reload (secrets already masked)."""
    if not isinstance(changes, list):
        return ""
    parts = []
    for c in changes:
        if isinstance(c, dict):
            parts.append(f"{c.get('field')}: {c.get('before')!s} -> {c.get('after')!s}")
    return "; ".join(parts)


def query_table(rows: Iterable[dict[str, Any]], console: Console) -> None:
    """Matching records as a table: seq, time, type, actor, outcome and the details."""
    table = Table(show_lines=False)
    for column in ("seq", "ts", "type", "actor", "outcome"):
        table.add_column(column, no_wrap=True)
    table.add_column("details", overflow="fold")
    for r in rows:
        details = orjson.dumps(r.get("details")).decode()
        table.add_row(
            str(r.get("seq", "")),
            str(r.get("ts", "")),
            str(r.get("type", "")),
            str(r.get("actor", "")),
            str(r.get("outcome", "")),
            details,
        )
    console.print(table)
