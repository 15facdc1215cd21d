"""The writer under a real full disk: a small tmpfs mounted for the test (needs root)."""

from __future__ import annotations

import io
import os
import threading
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from helpers import check_chain, stream_lines, stream_records
from tmpfs import fill, needs_root, tmpfs

from kerno_otel.audit.log import AuditLog
from kerno_otel.audit.writer import Writer
from kerno_otel.config import AuditConfig


def plugin_load(name: str) -> dict[str, object]:
    return {"plugin": name, "distribution": "kerno-otel", "version": "0.1.0", "hooks": []}


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    with tmpfs(tmp_path / "disk", "256k") as mount:
        yield mount


@needs_root
def test_full_disk_blocks_emitters_then_writes_everything(small_disk: Path) -> None:
    """on_write_error: block + on_overflow: block: a stalled disk is back-pressure, not loss."""
    live = small_disk / "kerno-audit.jsonl"
    err = io.StringIO()
    log = AuditLog(AuditConfig(file_path=str(live), queue_size=16), stderr=err)
    log.flush()
    filler = fill(small_disk)
    done = threading.Event()
    emitted = []

    def producer() -> None:
        for i in range(200):
            log.emit("plugin.load", details=plugin_load(f"p{i}"))
            emitted.append(i)
        done.set()

    thread = threading.Thread(target=producer)
    thread.start()
    # A negative check needs a window: nothing may get through for a second.
    assert not done.wait(1.0), "emitters should be held back while the disk is full"
    assert len(emitted) < 200
    assert log.stats()["blocked_emits"] >= 1
    assert "retrying, emitters will block (on_write_error: block)" in err.getvalue()
    filler.unlink()
    thread.join(30)
    assert done.is_set()
    log.close()
    records = stream_records(live)
    names = [r["details"]["plugin"] for r in records if r["type"] == "plugin.load"]
    assert names == [f"p{i}" for i in range(200)]
    assert check_chain(stream_lines(live)) == []
    assert "writing to" in err.getvalue() and "works again" in err.getvalue()
    assert log.stats()["write_errors"] >= 1


@needs_root
def test_overflow_drop_is_recorded_as_audit_loss(small_disk: Path) -> None:
    live = small_disk / "kerno-audit.jsonl"
    log = AuditLog(
        AuditConfig(file_path=str(live), queue_size=16, on_overflow="drop"), stderr=io.StringIO()
    )
    log.flush()
    filler = fill(small_disk)
    for i in range(100):
        log.emit("plugin.load", details=plugin_load(f"p{i}"))
    filler.unlink()
    log.emit("plugin.load", details=plugin_load("after"))
    log.close()
    records = stream_records(live)
    written = [r for r in records if r["type"] == "plugin.load"]
    losses = [r["details"] for r in records if r["type"] == "audit.loss"]
    assert len(losses) == 1
    assert losses[0]["reason"] == "queue_full"
    assert losses[0]["types"] == {"plugin.load": losses[0]["count"]}
    assert len(written) - 1 + losses[0]["count"] == 100  # nothing vanished without a record
    assert losses[0]["count"] > 0
    assert check_chain(stream_lines(live)) == []


@needs_root
def test_write_error_drop_records_the_seq_range(small_disk: Path) -> None:
    live = small_disk / "kerno-audit.jsonl"
    log = AuditLog(AuditConfig(file_path=str(live), on_write_error="drop"), stderr=io.StringIO())
    log.flush()
    filler = fill(small_disk)
    for i in range(5):
        # bigger than a page, so the tail of the log's last page cannot take it
        log.emit("plugin.load", details={**plugin_load(f"lost{i}"), "hooks": ["h" * 5000]})
    log.flush()
    filler.unlink()
    log.emit("plugin.load", details=plugin_load("after"))
    log.close()
    lines = stream_lines(live)
    records = [orjson.loads(line) for line in lines]
    losses = [r for r in records if r["type"] == "audit.loss"]
    assert len(losses) >= 1
    # The five records, and any loss record the full disk took too (named again, coalesced).
    lost = sum(r["details"]["count"] for r in losses)
    assert lost >= 5
    assert {r["details"]["reason"] for r in losses} == {"write_error"}
    assert losses[0]["details"]["first_seq"] == 1
    # the seq gap is exactly the range the loss record names
    seqs = [r["seq"] for r in records]
    missing = sorted(set(range(seqs[-1] + 1)) - set(seqs))
    named = sorted(
        s for r in losses for s in range(r["details"]["first_seq"], r["details"]["last_seq"] + 1)
    )
    assert missing == named
    assert lost == len(missing)
    assert "lost" not in b"".join(lines).decode()


@needs_root
def test_write_error_exit_stops_the_process(small_disk: Path) -> None:
    live = small_disk / "kerno-audit.jsonl"
    codes: list[int] = []
    fd = os.open(live, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    config = AuditConfig(file_path=str(live), on_write_error="exit")
    writer = Writer(live, fd, config, first_seq=0, stderr=io.StringIO(), exit_process=codes.append)
    writer.start()
    fill(small_disk)
    writer.put(b'{"seq":0}')
    writer.flush(timeout=5)
    writer.close(timeout=5)
    assert codes == [74]


def test_writer_group_commit_counts(tmp_path: Path) -> None:
    live = tmp_path / "a.jsonl"
    fd = os.open(live, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    config = AuditConfig(file_path=str(live), fsync="batch", fsync_interval_ms=50)
    writer = Writer(live, fd, config, first_seq=0, stderr=io.StringIO())
    writer.start()
    tickets = [writer.put(f'{{"seq":{i}}}'.encode()) for i in range(1000)]
    assert writer.wait_durable(tickets[-1], timeout=10)
    writer.close()
    assert live.read_bytes() == b"".join(f'{{"seq":{i}}}\n'.encode() for i in range(1000))
    assert 1 <= writer.counters.fsyncs <= 20
    assert writer.counters.records_written == 1000


@needs_root
@pytest.mark.parametrize("pipeline", ["process", "thread"])
def test_loss_records_are_never_lost_while_the_disk_stays_full(
    small_disk: Path, pipeline: str
) -> None:
    """on_write_error: drop on a full disk: the loss records are dropped too, yet every
    missing seq ends up named by a loss record in the file, and verify says intact."""
    from kerno_otel.verify.verify import verify

    live = small_disk / "kerno-audit.jsonl"
    config = AuditConfig(
        file_path=str(live), queue_size=64, on_write_error="drop", pipeline=pipeline
    )
    log = AuditLog(config, stderr=io.StringIO())
    log.flush()
    filler = fill(small_disk)
    for i in range(3000):
        log.emit("plugin.load", details=plugin_load(f"lost{i}"))
    log.flush()
    filler.unlink()
    log.emit("plugin.load", details=plugin_load("after"))
    log.close()
    records = stream_records(live)
    seqs = [r["seq"] for r in records]
    missing = set(range(seqs[-1] + 1)) - set(seqs)
    losses = [r["details"] for r in records if r["type"] == "audit.loss"]
    named = [s for loss in losses for s in range(loss["first_seq"], loss["last_seq"] + 1)]
    assert len(missing) >= 3000
    assert sorted(named) == sorted(missing)  # each missing seq named exactly once
    assert sum(loss["count"] for loss in losses) == len(missing)
    assert records[-1]["type"] == "plugin.load"
    report = verify([live])
    assert report.intact, report.problems


# The file-system faults (a symlink planted at the live path, the directory removed under
# the writer, the live file deleted or renamed, a hard-linked alias) are in tests/faults/test_fs.py.
