"""The audit worker's wire protocol: frames, reading them back in parts, INIT, dispatch."""

from __future__ import annotations

import io
import os
import threading
from pathlib import Path

import orjson
from helpers import stream_records

from kerno_otel.audit.chain import GENESIS, body_of
from kerno_otel.audit.pipeline import build_sealer
from kerno_otel.audit.worker import protocol as wire
from kerno_otel.audit.worker.main import deliver
from kerno_otel.config import AuditConfig, CheckpointConfig
from kerno_otel.records.catalogue import EventType
from kerno_otel.records.redact import RedactionRule

SCHEMA = {
    "type": "object",
    "properties": {"note": {"type": "string"}},
    "additionalProperties": False,
}
RESOURCE = {"service.name": "kerno", "service.instance.id": "i-1", "host.name": "h"}


def test_every_kind_is_one_distinct_byte() -> None:
    kinds = [
        wire.INIT,
        wire.RECORD,
        wire.REFUSE,
        wire.DROP,
        wire.FLUSH,
        wire.STATS,
        wire.CLOSE,
        wire.READY,
        wire.ERROR,
        wire.STDERR,
        wire.TAKEN,
        wire.DURABLE,
        wire.FLUSHED,
        wire.CLOSED,
    ]
    assert all(len(kind) == 1 for kind in kinds)
    assert len(set(kinds)) == len(kinds)


def test_frames_and_messages() -> None:
    assert wire.frame(wire.RECORD, b'"ts":"x"') == b'R"ts":"x"\n'
    assert wire.frame(wire.CLOSE) == b"C\n"
    assert wire.message(wire.FLUSH, {"id": 3, "timeout_ms": 10}) == b'F{"id":3,"timeout_ms":10}\n'
    assert wire.value(b'{"id":3}') == {"id": 3}


def test_a_body_never_holds_a_newline() -> None:
    record = {
        "v": "1",
        "seq": 0,
        "ts": "t",
        "type": "a.b",
        "actor": "x",
        "details": {"text": "two\nlines\r\n"},
        "prev": GENESIS,
    }
    body = body_of(record)
    assert b"\n" not in body
    assert body == b'"ts":"t","type":"a.b","actor":"x","details":{"text":"two\\nlines\\r\\n"}'


def test_reader_reassembles_frames_split_across_reads() -> None:
    read_fd, write_fd = os.pipe()
    frames = [wire.frame(wire.RECORD, b"x" * n) for n in (1, 70_000, 3)] + [wire.frame(wire.CLOSE)]
    data = b"".join(frames)

    def trickle() -> None:  # odd-sized writes: frames arrive cut anywhere
        for start in range(0, len(data), 4093):
            os.write(write_fd, data[start : start + 4093])
        os.close(write_fd)

    writer = threading.Thread(target=trickle)
    writer.start()
    got = list(wire.FrameReader(read_fd).frames())
    writer.join()
    os.close(read_fd)
    assert got == [
        (wire.RECORD, b"x"),
        (wire.RECORD, b"x" * 70_000),
        (wire.RECORD, b"xxx"),
        (wire.CLOSE, b""),
    ]


def test_next_frame_then_batches_lose_nothing() -> None:
    read_fd, write_fd = os.pipe()
    os.write(write_fd, b"Y\nT5\nU4\n")
    os.close(write_fd)
    reader = wire.FrameReader(read_fd)
    assert reader.next_frame() == (wire.READY, b"")
    assert list(reader.batches()) == [[b"T5", b"U4"]]
    assert reader.next_frame() is None
    os.close(read_fd)


def test_init_round_trip() -> None:
    config = AuditConfig(
        file_path="/tmp/x/kerno-audit.jsonl",
        fsync="always",
        queue_size=128,
        redaction=(RedactionRule("ticket", r"T-\d+"),),
        checkpoint=CheckpointConfig(key_file="/k", every_records=7, every_seconds=2.5),
    )
    rules = (RedactionRule("acct", r"acct-\d+", "[acct]"),)
    types = (EventType("acme.export", "acme/", policies={"note": "text"}, schema=SCHEMA),)
    init = wire.Init(config, types, rules, RESOURCE, "1.2.3")
    frame = init.frame()
    assert frame[:1] == wire.INIT and frame.endswith(b"\n") and frame.count(b"\n") == 1
    assert wire.Init.read(frame[1:-1]) == init


def test_deliver_dispatches_record_refuse_and_drop(tmp_path: Path) -> None:
    config = AuditConfig(file_path=str(tmp_path / "kerno-audit.jsonl"), pipeline="thread")
    sealer = build_sealer(config, (), RESOURCE, version="0", stderr=io.StringIO())
    sealer.open()
    record = {
        "v": "1",
        "seq": 0,
        "ts": "2026-11-29T00:00:00.000000000Z",
        "type": "plugin.load",
        "actor": "plugins/manager",
        "severity": "INFO",
        "outcome": "success",
        "details": {"plugin": "p", "distribution": "d", "version": "1", "hooks": []},
        "resource": RESOURCE,
        "prev": GENESIS,
    }
    assert deliver(sealer, wire.RECORD, body_of(record)) == 1
    refuse = orjson.dumps({"type": "bpf.load", "problem": "bpf.load: /details: bad"})
    assert deliver(sealer, wire.REFUSE, refuse) == 1
    assert deliver(sealer, wire.DROP, orjson.dumps({"types": {"ai.call": 2}})) == 2
    sealer.close()
    records = stream_records(Path(config.file_path))
    assert [r["type"] for r in records] == [
        "audit.start",
        "plugin.load",
        "audit.loss",
        "audit.loss",
    ]
    assert records[1]["details"] == record["details"]
    refused, dropped = records[2]["details"], records[3]["details"]
    assert (refused["reason"], refused["types"], refused["rule"]) == (
        "validation_failed",
        {"bpf.load": 1},
        "bpf.load: /details: bad",
    )
    assert (dropped["reason"], dropped["count"], dropped["types"]) == (
        "queue_full",
        2,
        {"ai.call": 2},
    )


def test_clean_stage_turns_raw_frames_into_records_or_refusals(tmp_path: Path) -> None:
    from kerno_otel.audit.pipeline import build_cleaner
    from kerno_otel.audit.worker.clean import clean_frame

    config = AuditConfig(file_path=str(tmp_path / "kerno-audit.jsonl"))
    cleaner = build_cleaner(config, (), (), RESOURCE)
    details = {"program": "p", "attach": [], "success": False, "error": "from 10.1.2.3"}
    raw = orjson.dumps(
        [1_700_000_000_000_000_000, "bpf.load", "bpf/loader", "INFO", "failure", details, 0, 0]
    )
    frame = clean_frame(cleaner, raw)
    assert frame[:1] == wire.RECORD and frame.endswith(b"\n")
    record = orjson.loads(b"{" + frame[1:-1] + b"}")
    assert record["details"]["error"] == "from [REDACTED:ip]"
    assert record["ts"] == "2023-11-14T22:13:20.000000000Z"
    forged = orjson.dumps([1, "audit.loss", "audit/writer", "ERROR", "failure", {}, 0, 0])
    assert value_of(clean_frame(cleaner, forged)) == (
        wire.REFUSE,
        {"type": "audit.loss", "problem": "audit.loss: /type: reserved for the audit writer"},
    )
    assert value_of(clean_frame(cleaner, b'{"not": "an array"}')) == (
        wire.REFUSE,
        {"type": None, "problem": "(unknown type): (root): not a record frame"},
    )


def value_of(frame: bytes) -> tuple[bytes, object]:
    return frame[:1], wire.value(frame[1:-1])


def test_deliver_cleans_raw_frames_when_given_a_cleaner(tmp_path: Path) -> None:
    from kerno_otel.audit.pipeline import build_cleaner

    config = AuditConfig(file_path=str(tmp_path / "kerno-audit.jsonl"), pipeline="thread")
    sealer = build_sealer(config, (), RESOURCE, version="0", stderr=io.StringIO())
    sealer.open()
    cleaner = build_cleaner(config, (), (), RESOURCE)
    raw = orjson.dumps(
        [
            1,
            "plugin.load",
            "plugins/manager",
            "INFO",
            "success",
            {"plugin": "p", "distribution": "d", "version": "1", "hooks": []},
            0,
            0,
        ]
    )
    assert deliver(sealer, wire.RAW, raw, cleaner) == 1
    sealer.close()
    assert [r["type"] for r in stream_records(Path(config.file_path))] == [
        "audit.start",
        "plugin.load",
    ]
