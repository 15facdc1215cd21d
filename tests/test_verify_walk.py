"""The chain walk of ``audit verify`` (kerno_otel/verify/walk.py) on streams sealed here.

Each stream is built with the writer's own :class:`Chain`, then damaged by hand
the way an attacker or a crash would; the walk must name exactly the line, the
seq and the kind of every piece of damage, and nothing else.
"""

from __future__ import annotations

import hashlib
from typing import Any

import orjson
import pytest

from kerno_otel.audit.chain import Chain
from kerno_otel.verify.report import Problem, Report, _Where
from kerno_otel.verify.walk import _lines_with, _parse, _Walker

FILE = "kerno-audit.jsonl"


class Stream:
    """Lines sealed in order, as the writer seals them."""

    def __init__(self) -> None:
        self.chain = Chain()
        self.lines: list[bytes] = []

    def add(self, type_name: str = "bpf.load", details: dict[str, Any] | None = None) -> bytes:
        seq = self.chain.next_seq
        record: dict[str, Any] = {
            "v": "1",
            "seq": 0,
            "ts": "2026-11-27T18:00:00.000000000Z",
            "type": type_name,
            "actor": "bpf/loader",
            "details": details if details is not None else {"program": f"p{seq}"},
            "prev": "",
        }
        line = self.chain.seal(record)
        self.lines.append(line)
        return line

    def bpf(self, count: int) -> Stream:
        for _ in range(count):
            self.add()
        return self

    def checkpoint(self) -> None:
        """An ``audit.checkpoint`` covering the line before it (the signature is not walked)."""
        last = self.chain.last_seq
        self.add("audit.checkpoint", {"seq": last, "hash": self.chain.prev, "stream": "s"})


def sealed(count: int) -> list[bytes]:
    return Stream().bpf(count).lines


def data(lines: list[bytes]) -> bytes:
    return b"".join(line + b"\n" for line in lines)


def hex_of(line: bytes) -> bytes:
    return hashlib.sha256(line).hexdigest().encode()


def walk(*files: bytes, wanted: frozenset[int] = frozenset()) -> tuple[Report, _Walker]:
    """Walk ``files`` (their contents, named a.jsonl, b.jsonl, …) as one stream, then finish."""
    report = Report()
    walker = _Walker(report, None)
    walker.wanted.update(wanted)
    for n, content in enumerate(files):
        walker.run_file(f"{chr(ord('a') + n)}.jsonl" if len(files) > 1 else FILE, content)
    walker.finish()
    return report, walker


def edit(line: bytes, old: bytes, new: bytes) -> bytes:
    assert line.count(old) == 1, (line, old)
    return line.replace(old, new)


# -- an intact stream ----------------------------------------------------------------------


def test_intact_stream_has_no_problem_and_ends_where_it_should() -> None:
    lines = sealed(6)
    report, walker = walk(data(lines))
    assert report.problems == []
    assert report.records == 6
    assert (walker.expect_seq, walker.prev, walker.prev2) == (6, hex_of(lines[5]), hex_of(lines[4]))
    assert walker.last == _Where(FILE, 6, 5)


def test_intact_stream_across_two_files_chains_on() -> None:
    lines = sealed(7)
    report, walker = walk(data(lines[:3]), data(lines[3:]))
    assert report.problems == []
    assert report.records == 7
    assert walker.last == _Where("b.jsonl", 4, 6)


def test_empty_file_changes_nothing() -> None:
    report, walker = walk(b"")
    assert (report.problems, report.records, walker.last, walker.expect_seq) == ([], 0, None, 0)


def test_wanted_seqs_get_their_hash_and_place_fast_or_slow() -> None:
    """The hashes checkpoints in the sidecar are compared against, on either path."""
    lines = sealed(6)
    intact, walker = walk(data(lines), wanted=frozenset({1, 4}))
    assert intact.problems == []
    assert walker.hash_at == {
        1: (hex_of(lines[1]), _Where(FILE, 2, 1)),
        4: (hex_of(lines[4]), _Where(FILE, 5, 4)),
    }
    damaged = [*lines[:2], lines[3], lines[2], *lines[4:]]  # the slow path: a swap
    report, walker = walk(data(damaged), wanted=frozenset({1, 2, 4}))
    assert walker.hash_at == {
        1: (hex_of(lines[1]), _Where(FILE, 2, 1)),
        2: (hex_of(lines[2]), _Where(FILE, 4, 2)),
        4: (hex_of(lines[4]), _Where(FILE, 5, 4)),
    }
    assert [p.kind for p in report.problems] == ["reordered"]


def test_resync_continues_from_what_a_rotate_record_claims() -> None:
    lines = sealed(6)
    report = Report()
    walker = _Walker(report, None)
    walker.resync(3, hex_of(lines[2]))
    walker.run_file(FILE, data(lines[3:]))
    walker.finish()
    assert report.problems == []
    assert walker.last == _Where(FILE, 3, 5)


# -- modified ------------------------------------------------------------------------------


@pytest.mark.parametrize("index", [2, 4], ids=["middle", "before-the-last"])
def test_edited_content_is_the_line_whose_hash_the_next_prev_misses(index: int) -> None:
    lines = sealed(6)
    lines[index] = edit(lines[index], b'"p%d"' % index, b'"p9"')
    report, _ = walk(data(lines))
    assert report.problems == [
        Problem(
            FILE, index + 1, index, "modified", "its hash does not match the prev of the next line"
        )
    ]


def test_edited_prev_matches_neither_neighbour() -> None:
    lines = sealed(6)
    lines[2] = lines[2][:-66] + b"e" * 64 + b'"}'
    report, _ = walk(data(lines))
    assert report.problems == [
        Problem(FILE, 3, 2, "modified", "its prev matches neither neighbour")
    ]


@pytest.mark.parametrize("new_seq", [9, 0], ids=["up", "down"])
def test_edited_seq_that_still_links_is_a_changed_seq(new_seq: int) -> None:
    lines = sealed(6)
    lines[3] = edit(lines[3], b'"seq":3,', b'"seq":%d,' % new_seq)
    report, _ = walk(data(lines))
    assert report.problems == [
        Problem(
            FILE,
            4,
            new_seq,
            "modified",
            f"seq {new_seq}, expected 3, yet it links to the line before: its seq was changed",
        )
    ]


def test_a_line_that_is_not_a_record() -> None:
    lines = sealed(5)
    lines[2] = b"hello, auditor"
    report, _ = walk(data(lines))
    assert report.problems == [
        Problem(FILE, 3, None, "modified", "not an audit record (no JSON seq and prev)")
    ]


def test_a_checkpoint_that_does_not_cover_the_line_before_it() -> None:
    stream = Stream().bpf(3)
    stream.add("audit.checkpoint", {"seq": 1, "hash": "sha256:" + "0" * 64})
    stream.bpf(2)
    report, _ = walk(data(stream.lines))
    assert report.problems == [
        Problem(FILE, 4, 3, "modified", "this checkpoint does not cover the line before it")
    ]


def test_checkpoints_that_cover_the_line_before_are_collected() -> None:
    stream = Stream().bpf(3)
    stream.checkpoint()
    stream.bpf(2)
    stream.checkpoint()
    report, walker = walk(data(stream.lines))
    assert report.problems == []
    assert walker.log_checkpoints == [
        (_Where(FILE, 4, 3), orjson.loads(stream.lines[3])["details"]),
        (_Where(FILE, 7, 6), orjson.loads(stream.lines[6])["details"]),
    ]


# -- deleted -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("gone", "explanation"),
    [((2,), "seq 2 missing before this line"), ((2, 3, 4), "seqs 2..4 missing before this line")],
    ids=["one", "three"],
)
def test_deleted_lines_are_named_by_seq_range(gone: tuple[int, ...], explanation: str) -> None:
    lines = sealed(8)
    kept = [line for n, line in enumerate(lines) if n not in gone]
    report, _ = walk(data(kept))
    assert report.problems == [Problem(FILE, 3, 2, "deleted", explanation)]


def test_first_lines_deleted() -> None:
    report, _ = walk(data(sealed(5)[2:]))
    assert report.problems == [Problem(FILE, 1, 0, "deleted", "seqs 0..1 missing before this line")]


def test_a_gap_owned_up_to_by_a_write_error_loss_is_not_damage() -> None:
    stream = Stream().bpf(7)
    stream.add("audit.loss", {"reason": "write_error", "first_seq": 4, "last_seq": 5, "count": 2})
    stream.bpf(1)
    report, walker = walk(data([*stream.lines[:4], *stream.lines[6:]]))
    assert report.problems == []
    assert walker.losses == [(4, 5)]


def test_a_loss_for_another_reason_or_range_does_not_excuse_a_gap() -> None:
    stream = Stream().bpf(7)
    stream.add("audit.loss", {"reason": "queue_full", "first_seq": 4, "last_seq": 5})
    stream.add("audit.loss", {"reason": "write_error", "first_seq": 5, "last_seq": 5})
    report, _ = walk(data([*stream.lines[:4], *stream.lines[6:]]))
    assert report.problems == [Problem(FILE, 5, 4, "deleted", "seqs 4..5 missing before this line")]


# -- reordered -----------------------------------------------------------------------------


def test_two_lines_swapped() -> None:
    lines = sealed(6)
    lines[2], lines[3] = lines[3], lines[2]
    report, walker = walk(data(lines))
    assert report.problems == [
        Problem(FILE, 3, 3, "reordered", "seq 3 comes before seq 2 (lines swapped)")
    ]
    assert report.records == 6
    assert walker.last == _Where(FILE, 6, 5)


def test_a_line_moved_further_on_is_reordered_and_its_gap_not_reported() -> None:
    lines = sealed(8)
    moved = [lines[0], lines[1], lines[3], lines[4], lines[5], lines[2], lines[6], lines[7]]
    report, walker = walk(data(moved))
    assert report.problems == [Problem(FILE, 6, 2, "reordered", "seq 2 after seq 5")]
    assert walker.moved == {2}


# -- inserted ------------------------------------------------------------------------------


def test_a_forged_line_with_the_next_seq_and_the_right_prev() -> None:
    """It links to the line before, so the real next line's prev skips over it."""
    lines = sealed(6)
    forged = edit(lines[3], b'"p3"', b'"forged"')
    report, _ = walk(data([*lines[:3], forged, *lines[3:]]))
    assert report.problems == [
        Problem(
            FILE,
            4,
            3,
            "inserted",
            "seq 3 appears twice and the next line's prev skips over this one",
        )
    ]


def test_a_forged_line_with_an_old_seq_and_the_right_prev() -> None:
    lines = sealed(6)
    forged = edit(lines[3], b'"seq":3,', b'"seq":1,')
    report, _ = walk(data([*lines[:3], forged, *lines[3:]]))
    assert report.problems == [
        Problem(FILE, 4, 1, "inserted", "seq 1 (expected 3) and the next line's prev skips over it")
    ]


# -- torn-line -----------------------------------------------------------------------------


def test_a_last_line_cut_mid_write() -> None:
    lines = sealed(4)
    report, walker = walk(data(lines[:3]) + lines[3][:40])
    assert walker.last == _Where(FILE, 3, 2)  # the cut line is not where the stream ends
    assert report.problems == [
        Problem(
            FILE,
            4,
            None,
            "torn-line",
            "the last line has no newline: a write cut short (crash) or a cut",
        )
    ]
    assert report.records == 4


def test_a_whole_last_line_without_its_newline() -> None:
    lines = sealed(4)
    report, walker = walk(data(lines)[:-1])
    assert report.problems == [Problem(FILE, 4, 3, "torn-line", "the last line has no newline")]
    assert walker.last == _Where(FILE, 4, 3)


# -- the stream id and the parsing helpers -------------------------------------------------


def test_the_stream_id_comes_from_the_first_start_or_rotate_that_names_one() -> None:
    stream = Stream()
    stream.add("audit.rotate", {"stream": "sha256:first", "old_file": "x.jsonl"})
    stream.bpf(2)
    stream.add("audit.start", {"stream": "sha256:second"})
    report, _ = walk(data(stream.lines))
    assert report.stream == "sha256:first"


def test_parse_reads_the_fixed_layout_or_falls_back_to_json() -> None:
    line = sealed(1)[0]
    assert _parse(line) == (0, b"0" * 64)
    spaced = orjson.dumps(orjson.loads(line), option=orjson.OPT_INDENT_2).replace(b"\n", b"")
    assert _parse(spaced) == (0, b"0" * 64)
    assert _parse(b'{"seq": true, "prev": "sha256:ab"}') == (None, b"ab")
    assert _parse(b'{"seq": 4, "prev": "md5:ab"}') == (4, None)
    assert _parse(b"[4]") == (None, None)
    assert _parse(b"not json") == (None, None)


def test_lines_with_gives_the_index_of_each_line_holding_the_needle() -> None:
    content = b"a\nxb\nc\nxx\nd\nx"
    assert list(_lines_with(content, b"x")) == [1, 3, 5]
    assert list(_lines_with(content, b"z")) == []
