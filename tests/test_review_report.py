"""``audit report`` on a log built through the pipeline: every count against an independent
count of the same records, a JSON output that is byte-stable, and the verdict of verify."""

from __future__ import annotations

import json
import shutil
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from helpers import stream_records
from review_log import Built, build

from kerno_otel.cli.app import main
from kerno_otel.review.controls import CONTROLS, EVIDENCE


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Built:
    root = tmp_path_factory.mktemp("report")
    return build(root / "log", root / "keys")


@pytest.fixture(scope="module")
def records(built: Built) -> list[dict[str, Any]]:
    return stream_records(built.live)


def report(directory: Path, built: Built, *extra: str) -> Result:
    return CliRunner().invoke(
        main,
        ["audit", "report", str(directory), "--key", str(built.keys.public_path), *extra],
    )


@pytest.fixture(scope="module")
def data(built: Built) -> dict[str, Any]:
    result = report(built.directory, built, "--json", "--silent")
    assert result.exit_code == 0, result.output
    parsed = json.loads(result.stdout)
    assert isinstance(parsed, dict)
    return parsed


def of(records: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [r for r in records if r["type"] == kind]


def test_counts_per_type_and_outcome_match_an_independent_count(
    data: dict[str, Any], records: list[dict[str, Any]]
) -> None:
    counts: dict[str, Counter[str]] = defaultdict(Counter)
    for r in records:
        counts[r["type"]][r["outcome"]] += 1
    assert data["by_type"] == {
        t: {"total": sum(c.values()), "success": c["success"], "failure": c["failure"],
            "unknown": c["unknown"]}
        for t, c in sorted(counts.items())
    }  # fmt: skip
    assert data["records"] == len(records) == 137
    assert data["time_range"] == {
        "first": min(r["ts"] for r in records),
        "last": max(r["ts"] for r in records),
    }
    assert sum(sum(b["counts"].values()) for b in data["timeline"]["buckets"]) == len(records)


def test_streams_restarts_crashes_and_losses(
    data: dict[str, Any], records: list[dict[str, Any]], built: Built
) -> None:
    (stream,) = data["streams"]
    assert (stream["records"], stream["first_seq"], stream["last_seq"], stream["intact"]) == (
        len(records), 0, len(records) - 1, True,
    )  # fmt: skip
    assert stream["id"] == of(records, "audit.checkpoint")[0]["details"]["stream"]
    recover = of(records, "audit.recover")[0]
    assert data["restarts"] == {
        "audit_start_new": 1,
        "audit_start_resumed": 1,
        "daemon_start": 2,
        "daemon_stop": 0,
        "daemon_panic": 0,
        "recoveries": [
            {"ts": recover["ts"], "seq": recover["seq"], "file": "kerno-audit.jsonl",
             "bytes": 42, "set_aside": recover["details"]["set_aside"]}
        ],
    }  # fmt: skip
    loss = of(records, "audit.loss")[0]
    assert data["losses"] == {
        "records": 1,
        "lost": 1,
        "list": [
            {"ts": loss["ts"], "seq": loss["seq"], "reason": "validation_failed", "count": 1,
             "first_seq": None, "last_seq": None, "after_seq": loss["seq"] - 1,
             "types": {"plugin.load": 1}}
        ],
    }  # fmt: skip


def test_activity_tables_match_an_independent_count(
    data: dict[str, Any], records: list[dict[str, Any]]
) -> None:
    auth: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0])
    for r in of(records, "auth.failure"):
        row = auth[(r["details"]["endpoint"], r["details"]["reason"])]
        row[0] += 1
        row[1] += r["details"]["suppressed"]
    assert data["auth_failures"] == [
        {"endpoint": e, "reason": why, "records": n, "suppressed": s, "attempts": n + s}
        for (e, why), (n, s) in sorted(auth.items())
    ]
    ai: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0, 0, 0, 0])
    for r in of(records, "ai.call"):
        d = r["details"]
        row = ai[(d["provider"], d["model"])]
        for i, add in enumerate(
            (1, r["outcome"] == "failure", d["cache"] == "hit", d["tokens"]["input"],
             d["tokens"]["output"])
        ):  # fmt: skip
            row[i] += add
    assert data["ai_calls"] == [
        {"provider": p, "model": m, "calls": a, "failures": b, "cache_hits": c,
         "tokens_input": ti, "tokens_output": to}
        for (p, m), (a, b, c, ti, to) in sorted(ai.items())
    ]  # fmt: skip
    assert len(data["ai_calls"]) == 6
    findings = Counter(
        (f["rule"], f["severity"], f["sink"], f["delivered"])
        for f in (r["details"] for r in of(records, "finding.emit"))
    )
    assert data["findings"] == [
        {"rule": k[0], "severity": k[1], "sink": k[2], "delivered": k[3], "count": n}
        for k, n in sorted(findings.items())
    ]
    bpf: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for r in of(records, "bpf.load"):
        bpf[r["details"]["program"]][0 if r["details"]["success"] else 1] += 1
    assert data["bpf_loads"] == [
        {"program": p, "success": s, "failure": f} for p, (s, f) in sorted(bpf.items())
    ]
    reloads = of(records, "config.reload")
    assert [(c["seq"], c["uid"], c["changes"]) for c in data["config_reloads"]] == [
        (r["seq"], 0, [{"field": "doctor.interval", "before": "30s", "after": "60s"}])
        for r in reloads
    ]
    assert data["plugin_errors"] == [
        {
            "plugin": "acme",
            "hook": "register_sinks",
            "error_type": "ConnectionError",
            "records": 1,
            "suppressed": 0,
            "count": 1,
        }
    ]


def test_verdict_and_controls(data: dict[str, Any], records: list[dict[str, Any]]) -> None:
    checkpoints = len(of(records, "audit.checkpoint"))
    assert data["verdict"] == {
        "intact": True,
        "fully_checked": True,
        "text": "INTACT: chain, seq, signatures and truncation all checked",
        "checkpoints_checked": 2 * checkpoints,  # each in the log and in .checkpoints
        "problems": [],
        "not_checked": [],
    }
    totals = Counter(r["type"] for r in records)
    assert [c["id"] for c in data["controls"]] == [c.id for c in CONTROLS]
    for control in data["controls"]:
        assert control["evidence"] == [
            {"type": t, "records": totals[t], "shows": shows}
            for t, (ids, shows) in EVIDENCE.items()
            if control["id"] in ids
        ]


def test_json_is_byte_stable(built: Built, data: dict[str, Any]) -> None:
    first = report(built.directory, built, "--json", "--silent")
    second = report(built.directory, built, "--json", "--silent")
    assert first.stdout == second.stdout
    assert json.loads(first.stdout) == data


def test_damaged_log_reports_damage_and_exits_1(built: Built, tmp_path: Path) -> None:
    copy = tmp_path / "log"
    shutil.copytree(built.directory, copy)
    live = copy / "kerno-audit.jsonl"
    lines = live.read_bytes().splitlines(keepends=True)
    lines[3] = lines[3].replace(b'"outcome":"success"', b'"outcome":"failure"', 1)
    live.write_bytes(b"".join(lines))
    result = report(copy, built, "--json", "--silent")
    assert result.exit_code == 1
    verdict = json.loads(result.stdout)["verdict"]
    assert verdict["intact"] is False
    assert verdict["text"] == "DAMAGED: 1 problem found by audit verify"
    assert [(p["file"], p["line"], p["kind"]) for p in verdict["problems"]] == [
        (str(live), 4, "modified")
    ]


def test_without_key_the_verdict_says_what_was_not_checked(built: Built) -> None:
    result = CliRunner().invoke(
        main, ["audit", "report", str(built.directory), "--json", "--silent"]
    )
    assert result.exit_code == 0
    verdict = json.loads(result.stdout)["verdict"]
    assert (verdict["intact"], verdict["fully_checked"]) == (True, False)
    assert verdict["not_checked"] == [
        "checkpoint signatures not checked: no public key given (--key)",
        "truncation not checkable: no public key given (--key)",
    ]


def test_terminal_tables(built: Built) -> None:
    result = report(built.directory, built)
    assert result.exit_code == 0
    out = result.stdout
    assert out.startswith("INTACT: chain, seq, signatures and truncation all checked\n")
    for title in (
        "Streams", "Records by type and outcome", "Restarts and crashes", "Losses (1 records",
        "Auth failures", "AI calls", "Findings", "BPF loads", "Config reloads",
        "Plugin errors", "Controls evidenced",
    ):  # fmt: skip
        assert title in out, title


def test_bad_key_is_a_usage_error(built: Built, tmp_path: Path) -> None:
    bad = tmp_path / "bad.pem"
    bad.write_text("not a key\n")
    result = CliRunner().invoke(main, ["audit", "report", str(built.directory), "--key", str(bad)])
    assert result.exit_code == 2
    assert result.stderr.startswith(f"Error: --key: {bad}")


def test_a_live_file_renamed_by_someone_else_is_in_the_report(tmp_path: Path) -> None:
    """logrotate without copytruncate renames the live file under the writer: the writer
    records audit.rotate reason renamed; the reviewer sees it in every form of the report."""
    import io
    import os

    from review_log import config, emit_session

    from kerno_otel.audit.keys import generate
    from kerno_otel.audit.log import AuditLog

    keys = generate(tmp_path / "keys")
    directory = tmp_path / "log"
    directory.mkdir()
    with AuditLog(config(directory, keys), stderr=io.StringIO()) as log:
        emit_session(log, 0, 3)
        assert log.flush()
        os.rename(directory / "kerno-audit.jsonl", directory / "kerno-audit.jsonl.1")
        emit_session(log, 3, 3)
        assert log.flush()  # the writer looks at its file before each flush
    built = Built(directory, keys)
    result = report(directory, built, "--json", "--silent", "--html", str(tmp_path / "r.html"))
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["streams"][0]["files"][0].endswith("kerno-audit.jsonl.1")
    rotate = [
        r for r in stream_records(directory / "kerno-audit.jsonl") if r["type"] == "audit.rotate"
    ]
    assert [r["details"]["reason"] for r in rotate] == ["renamed"]
    assert data["rotations"] == {
        "by_reason": {"renamed": 1},
        "by_others": [
            {"ts": rotate[0]["ts"], "seq": rotate[0]["seq"], "reason": "renamed",
             "file": "kerno-audit.jsonl.1"},
        ],
    }  # fmt: skip
    terminal = report(directory, built, "--silent").stdout
    assert "Live file renamed or removed by someone" in terminal
    row = [line for line in terminal.splitlines() if "kerno-audit.jsonl.1" in line]
    assert len(row) == 1 and " renamed " in row[0] and f" {rotate[0]['seq']} " in row[0]
    page = (tmp_path / "r.html").read_text()
    assert '<table id="file-changes">' in page and "kerno-audit.jsonl.1</td>" in page


def test_a_live_file_deleted_under_the_writer_shows_as_copied_back(tmp_path: Path) -> None:
    """``rm kerno-audit.jsonl`` under a running writer: the writer copies the file back from
    its open descriptor; the report says it was removed and copied back, and the verdict
    stays intact because nothing is missing."""
    import io

    from review_log import config, emit_session

    from kerno_otel.audit.keys import generate
    from kerno_otel.audit.log import AuditLog

    keys = generate(tmp_path / "keys")
    directory = tmp_path / "log"
    directory.mkdir()
    with AuditLog(config(directory, keys), stderr=io.StringIO()) as log:
        emit_session(log, 0, 3)
        assert log.flush()
        (directory / "kerno-audit.jsonl").unlink()
        emit_session(log, 3, 3)
        assert log.flush()
    built = Built(directory, keys)
    result = report(directory, built, "--json", "--silent")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    rotate = json.loads((directory / "kerno-audit.jsonl").read_bytes().splitlines()[0])
    assert rotate["type"] == "audit.rotate" and rotate["details"]["restored"] is True
    assert data["rotations"]["by_others"] == [
        {"ts": rotate["ts"], "seq": rotate["seq"], "reason": "removed",
         "file": rotate["details"]["old_file"], "restored": True},
    ]  # fmt: skip
    assert data["verdict"]["intact"] is True and data["verdict"]["fully_checked"] is True
    terminal = report(directory, built, "--silent").stdout
    assert "removed, copied back" in terminal
