"""``audit query`` on a log built through the pipeline: exact results for each filter and
their combinations, against an independent filter over the same records."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import orjson
import pytest
from click.testing import CliRunner, Result
from helpers import stream_lines
from review_log import Built, build

from kerno_otel.audit.files import rotated_files
from kerno_otel.cli.app import main

Record = dict[str, Any]


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Built:
    root = tmp_path_factory.mktemp("query")
    return build(root / "log", root / "keys")


@pytest.fixture(scope="module")
def lines(built: Built) -> list[bytes]:
    return stream_lines(built.live)


def query(built: Built, *args: str, fmt: str = "--nl") -> Result:
    return CliRunner().invoke(main, ["audit", "query", str(built.directory), fmt, *args])


def expected(lines: list[bytes], keep: Callable[[Record], bool]) -> list[bytes]:
    return [line for line in lines if keep(orjson.loads(line))]


def d(r: Record) -> Record:
    details = r["details"]
    assert isinstance(details, dict)
    return details


CASES: list[tuple[list[str], Callable[[Record], bool]]] = [
    (["--type", "ai.call"], lambda r: r["type"] == "ai.call"),
    (["--type", "audit.*"], lambda r: r["type"].startswith("audit.")),
    (["--type", "bpf.load", "--type", "config.reload"],
     lambda r: r["type"] in ("bpf.load", "config.reload")),
    (["--actor", "http/server"], lambda r: r["actor"] == "http/server"),
    (["--actor", "config/*"], lambda r: r["actor"].startswith("config/")),
    (["--outcome", "failure"], lambda r: r["outcome"] == "failure"),
    (["--cycle-id", "cycle-20261127-180003"],
     lambda r: d(r).get("cycle_id") == "cycle-20261127-180003"),
    (["--seq-range", "10-20"], lambda r: 10 <= r["seq"] <= 20),
    (["--seq-range", "130-"], lambda r: r["seq"] >= 130),
    (["--seq-range", "-5"], lambda r: r["seq"] <= 5),
    (["--seq-range", "7"], lambda r: r["seq"] == 7),
    (["--where", "details.provider=openai"], lambda r: d(r).get("provider") == "openai"),
    (["--where", "details.tokens.input=105"],
     lambda r: d(r).get("tokens", {}).get("input") == 105),
    (["--where", "details.delivered=false"], lambda r: d(r).get("delivered") is False),
    (["--where", "details.attach=syscalls:sys_exit_openat"], lambda r: "attach" in d(r)),
    (["--where", "details.changes.field=doctor.interval"],
     lambda r: any(c["field"] == "doctor.interval" for c in d(r).get("changes", []))),
    (["--where", "details.reason=validation_failed"],
     lambda r: d(r).get("reason") == "validation_failed"),
    (["--type", "ai.call", "--outcome", "failure", "--where", "details.provider=anthropic"],
     lambda r: r["type"] == "ai.call" and r["outcome"] == "failure"
     and d(r)["provider"] == "anthropic"),
    (["--type", "ai.call", "--type", "finding.emit", "--cycle-id", "cycle-20261127-180001"],
     lambda r: r["type"] in ("ai.call", "finding.emit")
     and d(r)["cycle_id"] == "cycle-20261127-180001"),
    (["--seq-range", "50-120", "--type", "auth.failure", "--where", "details.reason=token_missing"],
     lambda r: 50 <= r["seq"] <= 120 and r["type"] == "auth.failure"
     and d(r)["reason"] == "token_missing"),
    (["--actor", "audit/writer", "--where", "details.resumed=true"],
     lambda r: r["actor"] == "audit/writer" and d(r).get("resumed") is True),
]  # fmt: skip


@pytest.mark.parametrize(("args", "keep"), CASES, ids=[" ".join(a) for a, _ in CASES])
def test_each_filter_and_combination_gives_exactly_the_matching_lines(
    built: Built, lines: list[bytes], args: list[str], keep: Callable[[Record], bool]
) -> None:
    want = expected(lines, keep)
    assert want, "the log holds no such record: the case would prove nothing"
    result = query(built, *args)
    assert result.exit_code == 0, result.output
    assert result.stdout_bytes.splitlines() == want
    assert result.stderr == f"matched {len(want)} of {len(lines)} records in 4 files\n"


def test_since_and_until_select_by_time_to_the_nanosecond(built: Built, lines: list[bytes]) -> None:
    records = [orjson.loads(line) for line in lines]
    since, until = records[40]["ts"], records[90]["ts"]
    result = query(built, "--since", since, "--until", until)
    assert result.exit_code == 0
    assert result.stdout_bytes.splitlines() == [
        line for line, r in zip(lines, records, strict=True) if since <= r["ts"] < until
    ]
    # The same moment as a reviewer may type it: another offset, a space, lowercase t/z.
    moment = datetime.fromisoformat(since[:26] + "+00:00").astimezone(timezone(timedelta(hours=2)))
    typed = moment.strftime("%Y-%m-%dT%H:%M:%S.") + since[20:29] + "+02:00"
    for form in (typed, typed.replace("T", " "), since.lower(), typed.replace("+02:00", "+0200")):
        again = query(built, "--since", form, "--until", until)
        assert again.stdout_bytes == result.stdout_bytes, form
    day = since[:10]
    assert query(built, "--since", day).stdout_bytes.splitlines() == lines
    assert query(built, "--until", day).exit_code == 1


def test_nothing_matched_exits_1(built: Built, lines: list[bytes]) -> None:
    result = query(built, "--type", "daemon.panic")
    assert (result.exit_code, result.stdout, result.stderr) == (
        1,
        "",
        f"matched 0 of {len(lines)} records in 4 files\n",
    )


def test_json_is_one_array_of_the_records(built: Built, lines: list[bytes]) -> None:
    result = query(built, "--type", "config.reload", fmt="--json")
    assert result.exit_code == 0
    assert json.loads(result.stdout) == [
        orjson.loads(line) for line in expected(lines, lambda r: r["type"] == "config.reload")
    ]
    none = query(built, "--type", "daemon.panic", fmt="--json")
    assert (none.exit_code, json.loads(none.stdout)) == (1, [])


def test_table_shows_each_match(built: Built, lines: list[bytes]) -> None:
    result = query(built, "--type", "config.reload", fmt="--table")
    assert result.exit_code == 0
    rows = [row for row in result.stdout.splitlines() if "config.reload" in row]
    want = expected(lines, lambda r: r["type"] == "config.reload")
    assert [row.split("│")[1].strip() for row in rows] == [
        str(orjson.loads(line)["seq"]) for line in want
    ]


def test_files_in_any_order_are_read_in_chain_order(built: Built, lines: list[bytes]) -> None:
    files = [*rotated_files(built.live), built.live]
    result = CliRunner().invoke(
        main, ["audit", "query", "--nl", *map(str, reversed(files)), "--type", "audit.rotate"]
    )
    seqs = [orjson.loads(line)["seq"] for line in result.stdout_bytes.splitlines()]
    assert seqs == sorted(seqs) and len(seqs) == 3


BAD: list[tuple[list[str], str]] = [
    (["--type", "AI CALL"],
     "--type 'AI CALL': not an event type (e.g. ai.call, or audit.* for a family)"),
    (["--outcome", "ok"], "--outcome 'ok': expected one of success, failure, unknown"),
    (["--seq-range", "5..9"],
     "--seq-range '5..9': expected A-B, A- or -B with whole numbers (e.g. 100-200)"),
    (["--seq-range", "9-5"], "--seq-range '9-5': 9 is after 5"),
    (["--since", "yesterday"],
     "--since 'yesterday': expected a date or an RFC 3339 time "
     "(2026-07-01, 2026-07-01T12:00:00Z)"),
    (["--since", "2026-02-01", "--until", "2026-01-01"],
     "--since 2026-02-01 is not before --until 2026-01-01"),
    (["--where", "provider=openai"],
     "--where 'provider=openai': the field must be under details, as details.FIELD "
     "(e.g. details.provider=openai)"),
    (["--where", "details.provider"], "--where 'details.provider': expected details.FIELD=VALUE"),
]  # fmt: skip


@pytest.mark.parametrize(("args", "message"), BAD, ids=[" ".join(a) for a, _ in BAD])
def test_a_bad_filter_is_a_usage_error(built: Built, args: list[str], message: str) -> None:
    result = query(built, *args)
    assert (result.exit_code, result.stdout, result.stderr) == (2, "", f"Error: {message}\n")


def test_a_missing_path_is_a_usage_error(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["audit", "query", str(tmp_path / "nope")])
    assert (result.exit_code, result.stderr) == (
        2,
        f"Error: {tmp_path / 'nope'}: No such file or directory\n",
    )


def test_a_type_inside_details_is_not_the_record_type(tmp_path: Path) -> None:
    """The byte search finds "type":"ai.call" anywhere; only the record's own type counts."""
    line = (
        b'{"v":"1","seq":0,"ts":"2026-11-27T18:00:00.000000000Z","type":"plugin.load",'
        b'"actor":"plugins/manager","severity":"INFO","outcome":"success","details":'
        b'{"plugin":"x","note":{"type":"ai.call"}},"prev":"sha256:' + b"0" * 64 + b'"}'
    )
    log = tmp_path / "crafted.jsonl"
    log.write_bytes(line + b"\n" + line.replace(b'"plugin.load"', b'"ai.call"', 1) + b"\n")
    for extra in ([], ["--outcome", "success"]):
        result = CliRunner().invoke(
            main, ["audit", "query", str(log), "--nl", "--type", "ai.call", *extra]
        )
        assert result.exit_code == 0
        assert result.stdout_bytes.splitlines() == [line.replace(b'"plugin.load"', b'"ai.call"', 1)]
        plugin = CliRunner().invoke(
            main, ["audit", "query", str(log), "--nl", "--type", "plugin.load", *extra]
        )
        assert plugin.stdout_bytes.splitlines() == [line]
