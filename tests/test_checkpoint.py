"""Signed checkpoints written by the audit processor (issue 5)."""

from __future__ import annotations

import io
import itertools
import stat
from pathlib import Path
from typing import Any

import orjson
import pytest
from helpers import CheckpointWatch, stream_lines, stream_records

from kerno_otel.audit.chain import line_hash
from kerno_otel.audit.checkpoints import sidecar_path, signature_ok
from kerno_otel.audit.files import rotated_files
from kerno_otel.audit.keys import KeyPair, generate, load_public
from kerno_otel.audit.log import AuditLog
from kerno_otel.config import AuditConfig, CheckpointConfig, ConfigError


@pytest.fixture
def keys(tmp_path: Path) -> KeyPair:
    return generate(tmp_path / "keys")


def config(tmp_path: Path, keys: KeyPair, **checkpoint: Any) -> AuditConfig:
    values: dict[str, Any] = {"every_records": 1_000_000, "every_seconds": 3600.0}
    values.update(checkpoint)
    return AuditConfig(
        file_path=str(tmp_path / "log" / "kerno-audit.jsonl"),
        checkpoint=CheckpointConfig(key_file=str(keys.private_path), **values),
    )


def bpf(i: int) -> dict[str, object]:
    return {"program": f"p{i}", "attach": [], "success": True}


def checkpoints(live: Path) -> list[dict[str, Any]]:
    return [r["details"] for r in stream_records(live) if r["type"] == "audit.checkpoint"]


def test_each_checkpoint_covers_the_line_before_and_is_signed(
    tmp_path: Path, keys: KeyPair
) -> None:
    cfg = config(tmp_path, keys, every_records=10)
    with AuditLog(cfg, stderr=io.StringIO()) as log:
        for i in range(35):
            log.emit("bpf.load", details=bpf(i))
    live = Path(cfg.file_path)
    lines = stream_lines(live)
    records = [orjson.loads(line) for line in lines]
    public = load_public(keys.public_path)
    stream = line_hash(lines[0])
    positions = [n for n, r in enumerate(records) if r["type"] == "audit.checkpoint"]
    # every 10 counted records (audit.start counts), then the shutdown one
    assert positions == [10, 21, 32, 39]
    for n in positions:
        details = records[n]["details"]
        assert details["seq"] == records[n - 1]["seq"]
        assert details["hash"] == line_hash(lines[n - 1])
        assert details["stream"] == stream
        assert signature_ok(details, public)
    # the same checkpoints, in order, in the checkpoints file, which is 0600
    sidecar = sidecar_path(live)
    assert stat.S_IMODE(sidecar.stat().st_mode) == 0o600
    assert [orjson.loads(line) for line in sidecar.read_bytes().splitlines()] == [
        records[n]["details"] for n in positions
    ]


def test_shutdown_writes_a_checkpoint(tmp_path: Path, keys: KeyPair) -> None:
    cfg = config(tmp_path, keys)
    with AuditLog(cfg, stderr=io.StringIO()) as log:
        log.emit("bpf.load", details=bpf(0))
    records = stream_records(Path(cfg.file_path))
    assert [r["type"] for r in records] == ["audit.start", "bpf.load", "audit.checkpoint"]
    assert records[-1]["details"]["seq"] == 1


def test_empty_intervals_are_sealed(tmp_path: Path, keys: KeyPair) -> None:
    """systemd CVE-2023-31438: a quiet interval must still produce a checkpoint.

    The intervals are real time: the processor's timer reads the monotonic clock
    (it takes no clock to inject), so this waits for three real 0.1 s intervals.
    """
    cfg = config(tmp_path, keys, every_seconds=0.1)
    log = AuditLog(cfg, stderr=io.StringIO())
    live = Path(cfg.file_path)
    CheckpointWatch(log).wait_for(lambda seen: len(seen) >= 3)
    log.close()
    records = stream_records(live)
    assert records[0]["type"] == "audit.start"
    assert {r["type"] for r in records[1:]} == {"audit.checkpoint"}
    assert len(records) >= 4
    # each one covers the one before: the quiet stream is sealed link by link
    for before, cp in itertools.pairwise(records):
        assert cp["details"]["seq"] == before["seq"]


def test_rotated_files_end_with_a_checkpoint_and_name_their_stream(
    tmp_path: Path, keys: KeyPair
) -> None:
    cfg = AuditConfig(
        file_path=str(tmp_path / "log" / "kerno-audit.jsonl"),
        max_size_mb=0.005,
        checkpoint=CheckpointConfig(key_file=str(keys.private_path), every_seconds=3600.0),
    )
    with AuditLog(cfg, stderr=io.StringIO()) as log:
        for i in range(60):
            log.emit("bpf.load", details=bpf(i))
    live = Path(cfg.file_path)
    stream = line_hash(stream_lines(live)[0])
    rotated = rotated_files(live)
    assert len(rotated) >= 2
    for path in rotated:
        lines = path.read_bytes().splitlines()
        assert orjson.loads(lines[-1])["type"] == "audit.checkpoint"
    for path in [*rotated[1:], live]:
        first = orjson.loads(path.read_bytes().split(b"\n", 1)[0])
        assert first["type"] == "audit.rotate"
        assert first["details"]["stream"] == stream


def test_resumed_stream_keeps_its_id(tmp_path: Path, keys: KeyPair) -> None:
    cfg = config(tmp_path, keys)
    with AuditLog(cfg, stderr=io.StringIO()) as log:
        log.emit("bpf.load", details=bpf(0))
    with AuditLog(cfg, stderr=io.StringIO()) as log:
        log.emit("bpf.load", details=bpf(1))
    live = Path(cfg.file_path)
    stream = line_hash(stream_lines(live)[0])
    starts = [r for r in stream_records(live) if r["type"] == "audit.start"]
    assert "stream" not in starts[0]["details"]
    assert starts[1]["details"]["stream"] == stream
    assert {cp["stream"] for cp in checkpoints(live)} == {stream}


def test_bad_key_file_is_a_clear_error(tmp_path: Path) -> None:
    missing = tmp_path / "nope.pem"
    cfg = AuditConfig(
        file_path=str(tmp_path / "log" / "kerno-audit.jsonl"),
        checkpoint=CheckpointConfig(key_file=str(missing)),
    )
    with pytest.raises(ConfigError) as info:
        AuditLog(cfg, stderr=io.StringIO())
    assert str(info.value) == f"audit.checkpoint.key_file: {missing}: No such file or directory"
