"""A full disk (a 2 MB tmpfs filled to the last byte) in each ``on_write_error`` mode and
pipeline: exact loss ranges, never a torn or invalid line, and the chain verifies."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import threading
from pathlib import Path

import orjson
import pytest
from conftest import fill, needs_root
from helpers import stream_lines, wait_until

from kerno_otel.audit.log import AuditLog
from kerno_otel.config import AuditConfig
from kerno_otel.records.schema import SchemaSet
from kerno_otel.records.validate import RecordValidator
from kerno_otel.verify.verify import verify

N = 3000
REPO = Path(__file__).resolve().parents[2]


def plugin_load(name: str) -> dict[str, object]:
    return {"plugin": name, "distribution": "kerno-otel", "version": "0.1.0", "hooks": []}


def check_every_line(live: Path) -> list[dict[str, object]]:
    """Every line whole (stream_lines asserts the newline) and valid against the schema."""
    check = RecordValidator(SchemaSet.builtin()).check
    records = []
    for line in stream_lines(live):
        record = orjson.loads(line)
        assert check(record) is None, line[:200]
        records.append(record)
    return records


@needs_root
@pytest.mark.parametrize("pipeline", ["process", "thread"])
def test_block_holds_emitters_and_loses_nothing(small_disk: Path, pipeline: str) -> None:
    live = small_disk / "kerno-audit.jsonl"
    err = io.StringIO()
    log = AuditLog(AuditConfig(file_path=str(live), queue_size=64, pipeline=pipeline), stderr=err)
    assert log.flush(timeout=30)
    filler = fill(small_disk)
    emitted: list[int] = []

    def producer() -> None:
        for i in range(N):
            log.emit("plugin.load", details=plugin_load(f"r{i}"))
            emitted.append(i)

    thread = threading.Thread(target=producer)
    thread.start()
    assert wait_until(lambda: "emitters will block" in err.getvalue(), 30)
    held = len(emitted)
    assert held < N
    filler.unlink()
    thread.join(120)
    assert not thread.is_alive()
    log.close()
    records = check_every_line(live)
    names = [r["details"]["plugin"] for r in records if r["type"] == "plugin.load"]
    assert names == [f"r{i}" for i in range(N)]
    assert not [r for r in records if r["type"] == "audit.loss"]
    assert verify([live]).intact
    print(orjson.dumps({"mode": "block", "pipeline": pipeline, "held_at": held}).decode())


@needs_root
@pytest.mark.parametrize("pipeline", ["process", "thread"])
def test_drop_names_every_lost_seq_exactly_once(small_disk: Path, pipeline: str) -> None:
    live = small_disk / "kerno-audit.jsonl"
    config = AuditConfig(
        file_path=str(live), queue_size=64, on_write_error="drop", pipeline=pipeline
    )
    log = AuditLog(config, stderr=io.StringIO())
    assert log.flush(timeout=30)
    filler = fill(small_disk)
    for i in range(N):
        log.emit("plugin.load", details=plugin_load(f"r{i}"))
    log.flush(timeout=30)
    filler.unlink()
    log.emit("plugin.load", details=plugin_load("after"))
    log.close()
    records = check_every_line(live)
    seqs = [r["seq"] for r in records]
    missing = sorted(set(range(seqs[-1] + 1)) - set(seqs))
    losses = [r["details"] for r in records if r["type"] == "audit.loss"]
    named = sorted(s for loss in losses for s in range(loss["first_seq"], loss["last_seq"] + 1))
    assert named == missing  # each missing seq named exactly once, nothing else missing
    assert sum(loss["count"] for loss in losses) == len(missing)
    written = [r for r in records if r["type"] == "plugin.load"]
    assert len(written) - 1 + len(missing) >= N  # every record written or named lost
    assert verify([live]).intact
    ranges = [(loss["first_seq"], loss["last_seq"]) for loss in losses]
    print(
        orjson.dumps(
            {
                "mode": "drop",
                "pipeline": pipeline,
                "written": len(written) - 1,
                "lost": len(missing),
                "loss_records": len(losses),
                "ranges": ranges,
            }
        ).decode()
    )


_EXIT_CHILD = r"""
import sys
from kerno_otel.audit.log import AuditLog
from kerno_otel.config import AuditConfig
config = AuditConfig(file_path=sys.argv[1], on_write_error="exit", pipeline=sys.argv[2])
log = AuditLog(config, stderr=sys.stderr)
log.flush()
print("ready", flush=True)
sys.stdin.readline()
for i in range(100000):
    log.emit("plugin.load", details={"plugin": f"r{i}", "distribution": "d", "version": "1",
                                     "hooks": []})
    log.flush()
"""


@needs_root
@pytest.mark.parametrize("pipeline", ["process", "thread"])
def test_exit_stops_the_daemon_with_a_whole_log(small_disk: Path, pipeline: str) -> None:
    live = small_disk / "kerno-audit.jsonl"
    child = subprocess.Popen(
        [sys.executable, "-c", _EXIT_CHILD, str(live), pipeline],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert child.stdout is not None and child.stdin is not None
    assert child.stdout.readline() == b"ready\n"
    filler = fill(small_disk)
    child.stdin.write(b"go\n")
    child.stdin.flush()
    _, stderr = child.communicate(timeout=120)
    assert child.returncode == 74, stderr.decode()[-2000:]
    assert b"on_write_error is 'exit': stopping" in stderr
    before = check_every_line(live)
    filler.unlink()
    with AuditLog(AuditConfig(file_path=str(live), pipeline=pipeline), stderr=io.StringIO()) as log:
        log.emit("plugin.load", details=plugin_load("after"))
    after = check_every_line(live)
    assert after[: len(before)] == before
    assert verify([live]).intact
    print(orjson.dumps({"mode": "exit", "pipeline": pipeline, "lines": len(before)}).decode())


@needs_root
@pytest.mark.parametrize("pipeline", ["process", "thread"])
def test_a_deleted_live_file_that_cannot_be_copied_back_is_recorded_as_gone(
    small_disk: Path, pipeline: str
) -> None:
    """The copy-back of a deleted live file needs room; on a full disk it fails, leaves no
    partial copy, and says so: ``audit.rotate`` reason ``removed`` without ``restored``,
    naming the live file itself, and verify reports the file missing (never intact)."""
    live = small_disk / "kerno-audit.jsonl"
    err = io.StringIO()
    log = AuditLog(AuditConfig(file_path=str(live), pipeline=pipeline), stderr=err)
    for i in range(40):
        log.emit("plugin.load", details=plugin_load(f"before{i}"))
    assert log.flush(timeout=30)
    filler = fill(small_disk)
    live.unlink()  # the writer still holds it: its blocks stay in use
    flushed: list[bool] = []
    flusher = threading.Thread(target=lambda: flushed.append(log.flush(timeout=60)))
    flusher.start()  # looks at the file, fails to copy it back, then waits for room
    assert wait_until(lambda: "cannot copy the removed" in err.getvalue(), 30), err.getvalue()
    filler.unlink()
    flusher.join(90)
    assert flushed == [True]
    log.emit("plugin.load", details=plugin_load("after"))
    log.close()
    assert "its records are gone" in err.getvalue()
    logs = [p.name for p in small_disk.iterdir() if p.name.endswith((".jsonl", ".gz"))]
    assert logs == [live.name]  # no partial copy left behind
    records = check_every_line(live)
    first = records[0]
    assert first["type"] == "audit.rotate"
    assert first["details"]["reason"] == "removed" and "restored" not in first["details"]
    assert first["details"]["old_file"] == live.name
    assert [r["details"]["plugin"] for r in records if r["type"] == "plugin.load"] == ["after"]
    assert [p.kind for p in verify([small_disk]).problems] == ["file-missing"]
