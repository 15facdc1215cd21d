from __future__ import annotations

import hashlib

import orjson
from helpers import ChainProblem, check_chain

from kerno_otel.audit.chain import GENESIS, Chain, Timestamps, body_of, line_hash, parse_ts


def test_timestamps_nanoseconds_utc() -> None:
    ts = Timestamps()
    assert ts.format(1_795_802_400_123_456_789) == "2026-11-27T18:00:00.123456789Z"
    assert ts.format(1_795_802_400_000_000_001) == "2026-11-27T18:00:00.000000001Z"
    assert ts.format(1_795_802_401_5) == "1970-01-01T00:00:17.958024015Z"


def test_parse_ts_inverts_format() -> None:
    ns = 1_795_802_400_123_456_789
    assert parse_ts(Timestamps().format(ns)) == ns


def record(name: str) -> dict[str, object]:
    return {"v": "1", "seq": 0, "ts": "t", "type": name, "details": {}, "prev": GENESIS}


def test_seal_assigns_seq_and_prev_in_place_and_order() -> None:
    chain = Chain()
    first = chain.seal(record("a.b"))
    second = chain.seal(record("c.d"))
    assert orjson.loads(first) == {
        "v": "1",
        "seq": 0,
        "ts": "t",
        "type": "a.b",
        "details": {},
        "prev": GENESIS,
    }
    assert list(orjson.loads(second)) == ["v", "seq", "ts", "type", "details", "prev"]
    assert orjson.loads(second)["prev"] == "sha256:" + hashlib.sha256(first).hexdigest()
    assert chain.next_seq == 2
    assert chain.last_seq == 1
    assert chain.prev == line_hash(second)
    assert Chain().last_seq is None


def test_resumed_chain_continues() -> None:
    chain = Chain(next_seq=41, prev="sha256:" + "a" * 64)
    line = orjson.loads(chain.seal(record("a.b")))
    assert (line["seq"], line["prev"]) == (41, "sha256:" + "a" * 64)


def lines(n: int) -> list[bytes]:
    chain = Chain()
    return [chain.seal(record(f"t.n{i}")) for i in range(n)]


def test_check_chain_whole() -> None:
    assert check_chain(lines(5)) == []


def test_check_chain_finds_edit_deletion_and_swap() -> None:
    edited = lines(5)
    edited[2] = edited[2].replace(b"t.n2", b"t.x2")
    assert check_chain(edited) == [ChainProblem(3, 3, "prev does not match the line before")]
    deleted = lines(5)
    del deleted[2]
    assert check_chain(deleted) == [
        ChainProblem(2, 3, "seq 3, expected 2"),
        ChainProblem(2, 3, "prev does not match the line before"),
    ]
    swapped = lines(5)
    swapped[1], swapped[2] = swapped[2], swapped[1]
    assert [p.index for p in check_chain(swapped)] == [1, 1, 2, 2, 3, 3]


def test_sealing_a_body_gives_the_bytes_of_encoding_the_whole_record() -> None:
    record = {
        "v": "1",
        "seq": 0,
        "ts": "2026-11-27T18:00:00.000000000Z",
        "type": "a.b",
        "actor": "x/y",
        "details": {"k": "é\n\u2028"},
        "resource": {"r": "1"},
        "trace_id": "0" * 31 + "1",
        "prev": GENESIS,
    }
    chain = Chain(41, "sha256:" + "a" * 64)
    line = chain.seal_body(body_of(record))
    assert line == orjson.dumps({**record, "seq": 41, "prev": "sha256:" + "a" * 64})
    assert chain.prev == line_hash(line) and chain.next_seq == 42


def test_body_of_refuses_a_record_out_of_line_order() -> None:
    import pytest

    with pytest.raises(ValueError, match="line order"):
        body_of({"seq": 0, "v": "1", "ts": "t", "prev": GENESIS})
