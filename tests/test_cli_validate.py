"""``kerno-otel audit validate`` (kerno_otel/cli/audit.py)."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from kerno_otel.cli import main
from kerno_otel.cli import schema as cli_schema

GOOD: dict[str, Any] = {
    "v": "1",
    "seq": 0,
    "ts": "2026-11-27T18:00:00.123456789Z",
    "type": "auth.failure",
    "actor": "http/server",
    "severity": "WARN",
    "outcome": "failure",
    "details": {
        "endpoint": "/metrics",
        "reason": "token_mismatch",
        "remote_ip": "[REDACTED:ip]",
        "suppressed": 0,
    },
    "prev": "sha256:" + "0" * 64,
}


def line(**details: Any) -> bytes:
    """One encoded record, ``details`` changed, with its newline."""
    rec = json.loads(json.dumps(GOOD))
    rec["details"].update(details)
    return json.dumps(rec, separators=(",", ":")).encode() + b"\n"


LEAKED_KEY = "sk-abcdefghijklmnopqrstuvwxyz0123"

#: One line of each kind of damage, in file order, and what validate says about each.
BAD_FILE = b"".join(
    [
        line(),
        line(remote_ip="10.0.0.7"),
        line(endpoint=f"/metrics?key={LEAKED_KEY}"),
        b'{"v": "1", "type": tru\n',
        b"[1, 2]\n",
        b"\n",
        b'{"v": "\xff"}\n',
        line(),
        line()[:40],  # torn: a crash mid-write
    ]
)
BAD_OUT = (
    "{f}:2: auth.failure: /details/remote_ip: 'const' rule failed"
    ' (expected "[REDACTED:ip]")\n'
    "{f}:3: auth.failure: /details/endpoint: 'not' rule failed"
    ' (matches leak pattern "secret")\n'
    "{f}:4: not valid JSON (column 23)\n"
    "{f}:5: not a JSON object (array)\n"
    "{f}:6: empty line\n"
    "{f}:7: not valid UTF-8 (byte 8)\n"
    "{f}:9: torn last line (no final newline)\n"
)


def run(*args: str, input: bytes | None = None, env: dict[str, str] | None = None) -> Any:
    return CliRunner().invoke(main, list(args), input=input, env=env)


def test_valid_file(tmp_path: Path) -> None:
    log = tmp_path / "a.jsonl"
    log.write_bytes(line() * 3)
    result = run("audit", "validate", str(log))
    assert (result.exit_code, result.stdout, result.stderr) == (
        0,
        "",
        "checked 3 lines in 1 file: all valid\n",
    )


def test_empty_file_is_valid(tmp_path: Path) -> None:
    log = tmp_path / "a.jsonl"
    log.write_bytes(b"")
    result = run("audit", "validate", str(log))
    assert (result.exit_code, result.stderr) == (0, "checked 0 lines in 1 file: all valid\n")


def test_bad_lines_of_every_kind(tmp_path: Path) -> None:
    log = tmp_path / "bad.jsonl"
    log.write_bytes(BAD_FILE)
    result = run("audit", "validate", str(log))
    assert result.exit_code == 1
    assert result.stdout == BAD_OUT.format(f=log)
    assert result.stderr == "checked 9 lines in 1 file: 7 invalid\n"
    assert LEAKED_KEY not in result.output


def test_reference_validator_agrees(tmp_path: Path) -> None:
    log = tmp_path / "bad.jsonl"
    log.write_bytes(BAD_FILE)
    result = run("audit", "validate", "--reference", str(log))
    assert (result.exit_code, result.stdout, result.stderr) == (
        1,
        BAD_OUT.format(f=log),
        "checked 9 lines in 1 file: 7 invalid\n",
    )


def test_missing_final_newline_on_a_whole_record(tmp_path: Path) -> None:
    log = tmp_path / "a.jsonl"
    log.write_bytes(line() + line()[:-1])
    result = run("audit", "validate", str(log))
    assert (result.exit_code, result.stdout, result.stderr) == (
        1,
        f"{log}:2: missing final newline\n",
        "checked 2 lines in 1 file: 1 invalid\n",
    )


def test_gzip_files_are_read(tmp_path: Path) -> None:
    plain = tmp_path / "live.jsonl"
    plain.write_bytes(line())
    rotated = tmp_path / "kerno-audit-20261127T180000Z.jsonl.gz"
    rotated.write_bytes(gzip.compress(line() * 1233 + line(suppressed=-1)))
    result = run("audit", "validate", str(rotated), str(plain))
    assert (result.exit_code, result.stdout, result.stderr) == (
        1,
        f"{rotated}:1234: auth.failure: /details/suppressed: 'minimum' rule failed\n",
        "checked 1,235 lines in 2 files: 1 invalid\n",
    )


def test_gzip_is_sniffed_whatever_the_name(tmp_path: Path) -> None:
    log = tmp_path / "renamed.jsonl"
    log.write_bytes(gzip.compress(line() * 2))
    result = run("audit", "validate", str(log))
    assert (result.exit_code, result.stderr) == (0, "checked 2 lines in 1 file: all valid\n")


def test_damaged_gzip(tmp_path: Path) -> None:
    truncated = tmp_path / "a.jsonl.gz"
    truncated.write_bytes(gzip.compress(line() * 2)[:-8])  # no CRC and size trailer
    not_gzip = tmp_path / "b.jsonl.gz"
    not_gzip.write_bytes(b"\x1f\x8bnot really gzip at all")
    result = run("audit", "validate", str(truncated), str(not_gzip))
    assert result.exit_code == 1
    assert result.stdout == (
        f"{truncated}:3: gzip data truncated\n{not_gzip}:1: not valid gzip data\n"
    )
    assert result.stderr == "checked 4 lines in 2 files: 2 invalid\n"


def test_stdin(tmp_path: Path) -> None:
    result = run("audit", "validate", "-", input=line() + line(reason="nope"))
    assert (result.exit_code, result.stdout, result.stderr) == (
        1,
        "<stdin>:2: auth.failure: /details/reason: 'enum' rule failed"
        ' (expected one of "token_missing", "token_mismatch", "mtls_failure")\n',
        "checked 2 lines in 1 file: 1 invalid\n",
    )


def test_missing_file_is_a_usage_error(tmp_path: Path) -> None:
    log = tmp_path / "a.jsonl"
    log.write_bytes(line())
    missing = tmp_path / "nope.jsonl"
    result = run("audit", "validate", str(log), str(missing))
    assert (result.exit_code, result.stdout, result.stderr) == (
        2,
        "",
        f"Error: {missing}: No such file or directory\n",
    )


def test_directory_without_logs_is_a_usage_error(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("not a log\n")
    result = run("audit", "validate", str(tmp_path))
    assert (result.exit_code, result.stdout, result.stderr) == (
        2,
        "",
        f"Error: {tmp_path}: no audit log files (*.jsonl, *.jsonl.gz) in this directory\n",
    )


def test_no_file_is_a_usage_error() -> None:
    result = run("audit", "validate")
    assert result.exit_code == 2
    assert result.stderr.endswith("Error: Missing argument 'FILE...'.\n")


def test_unexpected_errors_are_one_line_unless_debugging(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = tmp_path / "a.jsonl"
    log.write_bytes(line())

    def broken() -> None:
        raise RuntimeError("schema directory vanished")

    monkeypatch.setattr(cli_schema.SchemaSet, "builtin", broken)
    result = run("audit", "validate", str(log), env={"KERNO_OTEL_DEBUG": ""})
    assert (result.exit_code, result.stderr) == (
        1,
        "Error: RuntimeError: schema directory vanished\n",
    )
    result = run("audit", "validate", str(log), env={"KERNO_OTEL_DEBUG": "1"})
    assert isinstance(result.exception, RuntimeError)


def test_python_dash_m_in_a_real_process(tmp_path: Path) -> None:
    log = tmp_path / "bad.jsonl"
    log.write_bytes(BAD_FILE)
    env = {k: v for k, v in os.environ.items() if k != "KERNO_OTEL_DEBUG"}
    done = subprocess.run(
        [sys.executable, "-m", "kerno_otel", "audit", "validate", str(log)],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
    )
    assert (done.returncode, done.stdout, done.stderr) == (
        1,
        BAD_OUT.format(f=log),
        "checked 9 lines in 1 file: 7 invalid\n",
    )
