"""The forwarder's cursor and stream reader (kerno_otel/forward/cursor.py), on files built by hand.

The lines are small JSON objects with a ``seq``: the reader cares about whole
lines, file identities (the hash of a file's first line) and seqs, not the chain.
"""

from __future__ import annotations

import gzip
import os
import stat
from pathlib import Path

import orjson
import pytest

from kerno_otel.audit.chain import line_hash
from kerno_otel.audit.files import rotated_name
from kerno_otel.forward.cursor import Cursor, Line, StreamReader, last_seq_on_disk

NS = 1_795_000_000_000_000_000  # a fixed rotation time: file names are reproducible


def record(seq: int) -> bytes:
    return orjson.dumps({"v": "1", "seq": seq, "type": "bpf.load"})


def text(*seqs: int) -> bytes:
    return b"".join(record(s) + b"\n" for s in seqs)


def rotated_path(live: Path, index: int) -> Path:
    """Where rotated file number ``index`` goes (names sort in rotation order)."""
    return live.parent / rotated_name(live, NS + index * 1_000_000)


def rotated(live: Path, index: int, data: bytes, gz: bool = False) -> Path:
    """Rotated file number ``index`` holding ``data`` (as ``.gz`` when ``gz``)."""
    path = rotated_path(live, index)
    if gz:
        path = path.with_name(path.name + ".gz")
        path.write_bytes(gzip.compress(data))
    else:
        path.write_bytes(data)
    return path


def drain(reader: StreamReader, limit: int = 100) -> list[Line]:
    """Read until a read hands out nothing (each call stops at a file boundary)."""
    out: list[Line] = []
    for _ in range(20):
        got = reader.read(limit)
        if not got:
            return out
        out.extend(got)
    raise AssertionError("the reader never ran dry")


def lines_of(ident: str, *seqs: int, start: int = 0) -> list[Line]:
    """The Lines a reader hands out for ``seqs`` written in a row from offset ``start``."""
    out = []
    end = start
    for s in seqs:
        end += len(record(s)) + 1
        out.append(Line(record(s), ident, end))
    return out


@pytest.fixture
def live(tmp_path: Path) -> Path:
    return tmp_path / "kerno-audit.jsonl"


# -- Cursor -----------------------------------------------------------------------------


def test_cursor_path_is_beside_the_live_file(live: Path) -> None:
    assert Cursor.path_for(live) == live.parent / "kerno-audit.jsonl.cursor"


def test_no_cursor_file_means_the_start_of_the_stream(live: Path) -> None:
    assert Cursor.load(Cursor.path_for(live)) == Cursor(None, 0, None, None)


def test_save_writes_one_private_json_line_and_load_reads_it_back(live: Path) -> None:
    path = Cursor.path_for(live)
    cursor = Cursor("sha256:" + "a" * 64, 1234, 41, "sha256:" + "b" * 64)
    cursor.save(path)
    assert path.read_bytes() == (
        b'{"file":"sha256:' + b"a" * 64 + b'","offset":1234,"last_seq":41,'
        b'"last_hash":"sha256:' + b"b" * 64 + b'"}\n'
    )
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert Cursor.load(path) == cursor
    assert sorted(p.name for p in live.parent.iterdir()) == [path.name]


def test_save_replaces_the_cursor_and_a_stale_tmp_file(live: Path) -> None:
    path = Cursor.path_for(live)
    Cursor("sha256:old", 1, 0, "sha256:x").save(path)
    path.with_name(path.name + ".tmp").write_bytes(b"left by a crash")
    Cursor("sha256:new", 2, 1, "sha256:y").save(path)
    assert Cursor.load(path) == Cursor("sha256:new", 2, 1, "sha256:y")
    assert sorted(p.name for p in live.parent.iterdir()) == [path.name]


@pytest.mark.parametrize(
    "content",
    [
        b"not json\n",
        b"[1, 2]\n",
        b'{"file": null, "offset": 0, "last_seq": null}\n',
        b'{"file": null, "offset": "ten", "last_seq": null, "last_hash": null}\n',
        b"",
    ],
    ids=["not-json", "a-list", "a-key-missing", "offset-not-a-number", "empty"],
)
def test_a_file_that_is_not_a_cursor_is_refused_by_name(live: Path, content: bytes) -> None:
    path = Cursor.path_for(live)
    path.write_bytes(content)
    with pytest.raises(ValueError) as info:
        Cursor.load(path)
    assert str(info.value) == f"{path}: not a forwarder cursor; move it aside to re-send"


# -- StreamReader: one file --------------------------------------------------------------


def test_nothing_to_read_before_the_log_exists(live: Path) -> None:
    reader = StreamReader(live, Cursor())
    assert reader.read(10) == []
    assert last_seq_on_disk(live) is None


def test_whole_lines_of_the_live_file_with_their_end_offsets(live: Path) -> None:
    live.write_bytes(text(0, 1, 2))
    reader = StreamReader(live, Cursor())
    ident = line_hash(record(0))
    assert reader.read(10) == lines_of(ident, 0, 1, 2)
    assert reader.read(10) == []


def test_at_most_limit_lines_per_read(live: Path) -> None:
    live.write_bytes(text(0, 1, 2, 3, 4))
    reader = StreamReader(live, Cursor())
    ident = line_hash(record(0))
    everything = lines_of(ident, 0, 1, 2, 3, 4)
    assert reader.read(2) == everything[:2]
    assert reader.read(2) == everything[2:4]
    assert reader.read(2) == everything[4:]


def test_a_line_still_being_written_waits_for_its_newline(live: Path) -> None:
    whole = record(1)
    live.write_bytes(text(0) + whole[:7])
    reader = StreamReader(live, Cursor())
    ident = line_hash(record(0))
    assert reader.read(10) == lines_of(ident, 0)
    assert reader.read(10) == []
    with live.open("ab") as handle:
        handle.write(whole[7:] + b"\n")
    assert reader.read(10) == lines_of(ident, 1, start=len(record(0)) + 1)


def test_resumes_after_the_cursor_offset(live: Path) -> None:
    live.write_bytes(text(0, 1, 2, 3))
    ident = line_hash(record(0))
    acked = lines_of(ident, 0, 1)[-1]
    reader = StreamReader(live, Cursor(ident, acked.end, 1, line_hash(acked.data)))
    assert reader.read(10) == lines_of(ident, 2, 3, start=acked.end)


def test_rewind_goes_back_to_the_cursor(live: Path) -> None:
    live.write_bytes(text(0, 1, 2))
    ident = line_hash(record(0))
    reader = StreamReader(live, Cursor())
    first = reader.read(1)
    assert reader.read(10) == lines_of(ident, 1, 2, start=first[0].end)
    reader.rewind(Cursor(ident, first[0].end, 0, line_hash(first[0].data)))
    assert reader.read(10) == lines_of(ident, 1, 2, start=first[0].end)
    reader.rewind(Cursor())
    assert reader.read(10) == lines_of(ident, 0, 1, 2)


def test_a_cursor_without_a_file_skips_through_its_seq(live: Path) -> None:
    live.write_bytes(text(0, 1, 2, 3))
    ident = line_hash(record(0))
    reader = StreamReader(live, Cursor(None, 0, 1, None))
    assert reader.read(10) == lines_of(ident, 0, 1, 2, 3)[2:]


# -- StreamReader: across rotations --------------------------------------------------------


def test_rotated_files_oldest_first_then_the_live_file(live: Path) -> None:
    rotated(live, 1, text(0, 1))
    rotated(live, 2, text(2, 3), gz=True)
    live.write_bytes(text(4, 5))
    reader = StreamReader(live, Cursor())
    assert drain(reader) == [
        *lines_of(line_hash(record(0)), 0, 1),
        *lines_of(line_hash(record(2)), 2, 3),
        *lines_of(line_hash(record(4)), 4, 5),
    ]
    assert last_seq_on_disk(live) == 5


def test_the_live_file_rotated_under_the_reader_is_read_to_its_end(live: Path) -> None:
    """What the file got after the last read, then the new live file: no gap, no repeat."""
    live.write_bytes(text(0, 1))
    reader = StreamReader(live, Cursor())
    old = line_hash(record(0))
    assert reader.read(10) == lines_of(old, 0, 1)
    with live.open("ab") as handle:
        handle.write(text(2))
    os.rename(live, rotated_path(live, 1))
    live.write_bytes(text(3, 4))
    assert drain(reader) == [
        *lines_of(old, 2, start=len(text(0, 1))),
        *lines_of(line_hash(record(3)), 3, 4),
    ]


def test_a_new_live_file_without_a_whole_line_is_waited_for(live: Path) -> None:
    rotated(live, 1, text(0, 1))
    live.write_bytes(record(2)[:5])
    reader = StreamReader(live, Cursor())
    assert drain(reader) == lines_of(line_hash(record(0)), 0, 1)
    with live.open("ab") as handle:
        handle.write(record(2)[5:] + b"\n")
    assert drain(reader) == lines_of(line_hash(record(2)), 2)


def test_a_cursor_into_a_gzipped_file_resumes_at_its_uncompressed_offset(live: Path) -> None:
    """Compression after the cursor was saved: the same identity, the same offset."""
    rotated(live, 1, text(0, 1, 2), gz=True)
    live.write_bytes(text(3))
    ident = line_hash(record(0))
    acked = lines_of(ident, 0, 1)[-1]
    reader = StreamReader(live, Cursor(ident, acked.end, 1, line_hash(acked.data)))
    assert drain(reader) == [
        *lines_of(ident, 2, start=acked.end),
        *lines_of(line_hash(record(3)), 3),
    ]


def test_a_rotated_file_cut_mid_line_still_hands_out_its_last_bytes(live: Path) -> None:
    rotated(live, 1, text(0) + b'{"seq":1')
    live.write_bytes(text(2))
    reader = StreamReader(live, Cursor())
    first = line_hash(record(0))
    assert drain(reader) == [
        *lines_of(first, 0),
        Line(b'{"seq":1', first, len(text(0)) + len(b'{"seq":1') + 1),
        *lines_of(line_hash(record(2)), 2),
    ]


def test_a_cursor_into_a_file_that_is_gone_resumes_after_its_seq(live: Path) -> None:
    """Retention removed the file: warn once, then continue from the file holding seq + 1."""
    rotated(live, 2, text(3, 4, 5))
    live.write_bytes(text(6))
    warnings: list[str] = []
    gone = Cursor("sha256:" + "f" * 64, 40, 3, "sha256:" + "e" * 64)
    reader = StreamReader(live, gone, warn=warnings.append)
    assert drain(reader) == [
        *lines_of(line_hash(record(3)), 3, 4, 5)[1:],
        *lines_of(line_hash(record(6)), 6),
    ]
    assert warnings == ["the file the cursor points into is gone; resuming after seq 3"]


def test_last_seq_on_disk_falls_back_to_the_newest_rotated_file(live: Path) -> None:
    rotated(live, 1, text(0, 1))
    rotated(live, 2, text(2, 3), gz=True)
    assert last_seq_on_disk(live) == 3
    live.write_bytes(b"")
    assert last_seq_on_disk(live) == 3
    live.write_bytes(text(4) + record(5)[:3])
    assert last_seq_on_disk(live) == 4


def test_a_live_file_deleted_under_the_reader_is_waited_for_until_copied_back(live: Path) -> None:
    """``rm`` of the live file: the writer copies it back under a rotated name within
    0.5 s, and until then the file the reader is in is in no listing. A reader that lost
    its handle meanwhile (the live name changed between its listing and its open) used to
    call the file gone at once and go back to the seq of the cursor it started from:
    everything read since was shipped again. It now waits for the copy and reads on."""
    rotated(live, 1, text(0, 1))
    live.write_bytes(text(2, 3))
    warnings: list[str] = []
    reader = StreamReader(live, Cursor(), warn=warnings.append)
    deleted = line_hash(record(2))
    assert drain(reader) == [*lines_of(line_hash(record(0)), 0, 1), *lines_of(deleted, 2, 3)]
    live.unlink()
    live.write_bytes(text(6, 7))  # the next live file, before the copy is there
    reader.close()  # stands in for the open that lost the race
    assert drain(reader) == []
    rotated(live, 2, text(2, 3, 4, 5))  # the copy back: records 4 and 5 came after the rm
    assert drain(reader) == [
        *lines_of(deleted, 4, 5, start=len(text(2, 3))),
        *lines_of(line_hash(record(6)), 6, 7),
    ]
    assert warnings == []


def test_a_file_lost_for_good_resumes_after_the_last_line_handed_out(
    live: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Past the wait (a copy that never came), the reader goes on after the last seq it
    handed out, not after the seq of the cursor it started from."""
    import kerno_otel.forward.cursor as cursor_module

    monkeypatch.setattr(cursor_module, "MISSING_WAIT_S", 0.0)
    rotated(live, 1, text(0, 1))
    live.write_bytes(text(2, 3))
    warnings: list[str] = []
    reader = StreamReader(live, Cursor(), warn=warnings.append)
    assert len(drain(reader)) == 4
    live.unlink()
    live.write_bytes(text(4, 5))
    reader.close()
    assert drain(reader) == lines_of(line_hash(record(4)), 4, 5)
    assert warnings == ["the file the cursor points into is gone; resuming after seq 3"]
