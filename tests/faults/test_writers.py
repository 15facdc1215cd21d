"""Two writers on one stream: the second waits for the first (a restarted daemon and the
audit worker still finishing the old one's log) and continues its chain; a second writer
given a hard-linked alias of the live file is refused instead of forking the chain."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import threading
from pathlib import Path

import orjson
import pytest
from helpers import check_chain, stream_lines

from kerno_otel.audit.files import AuditFileError
from kerno_otel.audit.log import AuditLog
from kerno_otel.config import AuditConfig
from kerno_otel.verify.verify import verify

REPO = Path(__file__).resolve().parents[2]

_FIRST = r"""
import sys
from kerno_otel.audit.log import AuditLog
from kerno_otel.config import AuditConfig
log = AuditLog(AuditConfig(file_path=sys.argv[1], pipeline="process"), stderr=sys.stderr)
for i in range(500):
    log.emit("plugin.load", details={"plugin": f"a{i}", "distribution": "d", "version": "1",
                                     "hooks": []})
log.flush()
print("ready", flush=True)
sys.stdin.readline()
for i in range(500, 1000):
    log.emit("plugin.load", details={"plugin": f"a{i}", "distribution": "d", "version": "1",
                                     "hooks": []})
log.close()
"""


def _first_writer(live: Path) -> subprocess.Popen[bytes]:
    child = subprocess.Popen(
        [sys.executable, "-c", _FIRST, str(live)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert child.stdout is not None
    assert child.stdout.readline() == b"ready\n"
    return child


def plugin_load(name: str) -> dict[str, object]:
    return {"plugin": name, "distribution": "kerno-otel", "version": "0.1.0", "hooks": []}


def test_a_second_writer_waits_for_the_first_then_continues_its_chain(tmp_path: Path) -> None:
    live = tmp_path / "log" / "kerno-audit.jsonl"
    first = _first_writer(live)
    opened = threading.Event()
    second: list[AuditLog] = []

    def start_second() -> None:
        second.append(AuditLog(AuditConfig(file_path=str(live)), stderr=io.StringIO()))
        opened.set()

    thread = threading.Thread(target=start_second)
    thread.start()
    # A negative check needs a window: the second writer must not open while the first
    # holds the stream.
    assert not opened.wait(1.0)
    assert first.stdin is not None
    first.stdin.write(b"go\n")
    first.stdin.flush()
    assert first.wait(60) == 0
    thread.join(60)
    assert opened.is_set()
    log = second[0]
    for i in range(100):
        log.emit("plugin.load", details=plugin_load(f"b{i}"))
    log.close()
    lines = stream_lines(live)
    assert check_chain(lines) == []
    names = [r["details"]["plugin"] for r in map(orjson.loads, lines) if r["type"] == "plugin.load"]
    assert names == [f"a{i}" for i in range(1000)] + [f"b{i}" for i in range(100)]
    assert verify([live.parent]).intact


def test_a_writer_on_a_hard_linked_alias_is_refused(tmp_path: Path) -> None:
    """Issue 11 item 18, across processes: the alias has its own lock file, so the lock
    alone could not stop it; the live file's second name does."""
    live = tmp_path / "log" / "kerno-audit.jsonl"
    alias = tmp_path / "log" / "other.jsonl"
    first = _first_writer(live)
    try:
        os.link(live, alias)
        with pytest.raises(AuditFileError, match=r"has 2 names \(a hard link\)"):
            AuditLog(AuditConfig(file_path=str(alias)), stderr=io.StringIO())
    finally:
        assert first.stdin is not None
        first.stdin.write(b"go\n")
        first.stdin.flush()
        assert first.wait(60) == 0
    assert verify([live]).intact
    seqs = [r["seq"] for r in map(orjson.loads, stream_lines(live))]
    assert seqs == list(range(len(seqs)))  # one chain: nothing of a second writer's in it
