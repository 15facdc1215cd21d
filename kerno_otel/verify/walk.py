"""The chain walk of ``audit verify``: each line checked against the seq and hash before it.

The common case, an intact file, is checked with whole-list operations (one hash and two
slices per line, compared list against list); only a file where that fails is walked
line by line to say which line is bad and how.

How damage is told apart, from the evidence a line leaves (``E`` the seq
expected, ``P`` the hash of the line before):

- seq fits, prev is not ``P``: when the next line's prev is this line's hash, the
  line before was changed (``modified`` there); else this line was (its prev).
- seq jumps, prev is not ``P``: lines are gone (``deleted``), unless the next line
  carries the missing seq and links back to ``P`` (two lines swapped: ``reordered``),
  or an ``audit.loss`` (reason ``write_error``) names exactly that range.
- seq jumps or repeats but prev is ``P``: the seq itself was edited (``modified``).
- seq repeats and prev skips the line before (it is the hash of the line two back):
  the line before was slipped in (``inserted``); a line that links to ``P`` but
  that the next line skips over was slipped in too.
- seq goes back otherwise: ``reordered``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Final

import orjson
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from kerno_otel.audit.keys import key_id
from kerno_otel.verify.report import Problem, Report, _Where

_HEAD: Final = b'{"v":"1","seq":'
_PREV_KEY: Final = b'"prev":"sha256:'
_AUDIT_TYPE: Final = b'"type":"audit.'
_GENESIS_HEX: Final = b"0" * 64


def _parse(line: bytes) -> tuple[int | None, bytes | None]:
    """(seq, prev hex) read from a line's fixed layout, falling back to JSON."""
    if line.startswith(_HEAD) and line[-81:-66] == _PREV_KEY and line.endswith(b'"}'):
        comma = line.find(b",", 15)
        try:
            return int(line[15:comma]), line[-66:-2]
        except ValueError:
            pass
    try:
        record = orjson.loads(line)
    except orjson.JSONDecodeError:
        return None, None
    if not isinstance(record, dict):
        return None, None
    seq, prev = record.get("seq"), record.get("prev")
    prev_hex = prev[7:].encode() if isinstance(prev, str) and prev.startswith("sha256:") else None
    return (seq if isinstance(seq, int) and not isinstance(seq, bool) else None), prev_hex


def _lines_with(data: bytes, needle: bytes) -> Iterator[int]:
    """0-based indexes of the lines of ``data`` holding ``needle`` (a rare one)."""
    line = 0
    counted = 0
    at = data.find(needle)
    while at >= 0:
        line += data.count(b"\n", counted, at)
        counted = at
        yield line
        nxt = data.find(b"\n", at)
        if nxt < 0:
            return
        at = data.find(needle, nxt)
    return


@dataclass(frozen=True)
class Summary:
    """A file found whole on its own: numbered in a row from ``first_seq``, each line
    linked to the one before. What the walk needs to join it to its neighbours."""

    lines: int
    first_seq: int
    first_prev: bytes  # the hex hash the first line links to
    last_hash: bytes
    prev2: bytes | None  # hash of the line before the last (None for a one-line file)
    hash_at: dict[int, tuple[bytes, int]]  # wanted seq -> (hash, 1-based line)
    audit: list[tuple[int, bytes, bytes | None]]  # writer records: index, line, hash before


def summarize(data: bytes, wanted: Collection[int]) -> Summary | None:
    """Check one file's content on its own; None when it is not whole by itself.

    The common case, an intact file, is checked with whole-list operations (one hash
    and two slices per line, compared list against list; ``map()`` over C methods
    keeps Python frames out of it). Runs in a worker process for ``verify``'s
    parallel path, so it takes and returns plain data only.
    """
    if not data or not data.endswith(b"\n"):
        return None
    lines = data.split(b"\n")
    lines.pop()  # after the final newline
    first_line = lines[0]
    if not first_line.startswith(_HEAD):
        return None
    try:
        first = int(first_line[15 : first_line.find(b",", 15)])
    except ValueError:
        return None
    n = len(lines)
    sha = hashlib.sha256
    hashes = [sha(line).hexdigest().encode() for line in lines]
    heads = [b'{"v":"1","seq":%d,' % s for s in range(first, first + n)]
    prevs = [line[-66:-2] for line in lines]
    if prevs[1:] != hashes[:-1] or not all(map(bytes.startswith, lines, heads)):
        return None
    if not all(line[-81:-66] == _PREV_KEY for line in (lines[0], lines[-1])):
        return None
    hash_at = {s: (hashes[s - first], s - first + 1) for s in wanted if first <= s < first + n}
    audit = [
        (i, lines[i], hashes[i - 1] if i > 0 else None) for i in _lines_with(data, _AUDIT_TYPE)
    ]
    return Summary(n, first, prevs[0], hashes[-1], hashes[-2] if n >= 2 else None, hash_at, audit)


def join(parts: Sequence[Summary | None]) -> Summary | None:
    """The pieces of one file, summarized apart, as one summary: None unless each piece
    was whole and continues the one before (next seq, linked to its last hash)."""
    if not parts or any(p is None for p in parts):
        return None
    pieces = [p for p in parts if p is not None]
    if len(pieces) == 1:
        return pieces[0]
    first = pieces[0]
    lines = 0
    hash_at: dict[int, tuple[bytes, int]] = {}
    audit: list[tuple[int, bytes, bytes | None]] = []
    previous: Summary | None = None
    for piece in pieces:
        if previous is not None and (
            piece.first_seq != previous.first_seq + previous.lines
            or piece.first_prev != previous.last_hash
        ):
            return None
        for s, (h, line) in piece.hash_at.items():
            hash_at[s] = (h, line + lines)
        for i, line_bytes, before in piece.audit:
            if i == 0 and previous is not None:
                before = previous.last_hash
            audit.append((i + lines, line_bytes, before))
        lines += piece.lines
        previous = piece
    last = pieces[-1]
    prev2 = last.prev2 if last.lines > 1 else pieces[-2].last_hash
    return Summary(lines, first.first_seq, first.first_prev, last.last_hash, prev2, hash_at, audit)


class _Walker:
    """Checks lines in stream order, keeping what the next line must link to."""

    def __init__(self, report: Report, key: Ed25519PublicKey | None) -> None:
        self.report = report
        self.key = key
        self.key_id = key_id(key) if key is not None else None
        self.expect_seq = 0
        self.prev: bytes = _GENESIS_HEX
        self.prev2: bytes | None = None  # hash of the line before the previous one
        self.last: _Where | None = None
        self.skip_link = False
        self.gaps: list[tuple[int, int, Problem]] = []
        self.moved: set[int] = set()  # seqs found later, out of place
        self.losses: list[tuple[int, int]] = []
        self.log_checkpoints: list[tuple[_Where, dict[str, Any]]] = []
        self.hash_at: dict[int, tuple[bytes, _Where]] = {}
        self.wanted: set[int] = set()

    def problem(self, where: _Where, kind: str, explanation: str) -> None:
        self.report.problems.append(Problem(where.file, where.line, where.seq, kind, explanation))

    def resync(self, seq: int, prev_hex: bytes) -> None:
        """Continue from a known point (an ``audit.rotate``'s claim about a missing file)."""
        self.expect_seq, self.prev, self.prev2, self.skip_link = seq, prev_hex, None, False

    def run_file(self, name: str, data: bytes) -> None:
        summary = summarize(data, self.wanted) if not self.skip_link else None
        if summary is not None and self.take(name, summary):
            return
        torn = bool(data) and not data.endswith(b"\n")
        lines = data.split(b"\n")
        if not torn:
            lines.pop()  # after the final newline
        if not lines:
            return
        hashes = [hashlib.sha256(line).hexdigest().encode() for line in lines]
        parsed = [_parse(line) for line in lines]
        self._walk(name, lines, hashes, parsed, torn)

    def take(self, name: str, summary: Summary) -> bool:
        """Accept a whole file checked on its own (:func:`summarize`), when it joins the
        line before: it starts at the seq expected and links to the last hash. False
        (nothing changed) when it does not: the caller then walks it line by line."""
        first, n = summary.first_seq, summary.lines
        if self.skip_link or first != self.expect_seq or summary.first_prev != self.prev:
            return False
        for s, (h, line) in summary.hash_at.items():
            self.hash_at[s] = (h, _Where(name, line, s))
        for i, line_bytes, before in summary.audit:
            self._audit_line(_Where(name, i + 1, first + i), line_bytes, before)
        self.prev2 = summary.prev2 if summary.prev2 is not None else self.prev
        self.prev = summary.last_hash
        self.expect_seq = first + n
        self.last = _Where(name, n, first + n - 1)
        self.report.records += n
        return True

    def _accept(self, where: _Where, h: bytes, seq: int) -> None:
        self.prev2, self.prev = self.prev, h
        self.expect_seq = seq + 1
        self.last = where

    def _seq_edited(self, where: _Where, h: bytes, s: int, expect: int) -> None:
        """A line linked to the one before but numbered wrong: its seq was edited."""
        self.problem(
            where,
            "modified",
            f"seq {s}, expected {expect}, yet it links to the line before: its seq was changed",
        )
        self._accept(where, h, expect)
        self.skip_link = True  # its hash changed with it, so the next prev cannot match

    def _walk(
        self,
        name: str,
        lines: list[bytes],
        hashes: list[bytes],
        parsed: list[tuple[int | None, bytes | None]],
        torn: bool,
    ) -> None:
        n = len(lines)
        i = 0
        while i < n:
            s, p = parsed[i]
            h = hashes[i]
            where = _Where(name, i + 1, s)
            self.report.records += 1
            if s is not None and s in self.wanted:
                self.hash_at[s] = (h, where)
            if s is None or p is None:
                if torn and i == n - 1:
                    self.problem(
                        where,
                        "torn-line",
                        "the last line has no newline: a write cut short (crash) or a cut",
                    )
                else:
                    self.problem(where, "modified", "not an audit record (no JSON seq and prev)")
                self.prev2, self.prev = self.prev, h
                self.expect_seq += 1
                self.skip_link = True
                i += 1
                continue
            if torn and i == n - 1:
                self.problem(where, "torn-line", "the last line has no newline")
            linked = self.skip_link or p == self.prev
            self.skip_link = False
            expect = self.expect_seq
            nxt = parsed[i + 1] if i + 1 < n else None
            step = 1
            if s == expect and linked:
                self._accept(where, h, s)
            elif s == expect:
                if self.last is not None and (nxt is None or nxt[1] == h):
                    self.problem(
                        self.last,
                        "modified",
                        "its hash does not match the prev of the next line",
                    )
                    self._accept(where, h, s)
                else:
                    self.problem(where, "modified", "its prev matches neither neighbour")
                    self._accept(where, h, s)
                    self.skip_link = True
            elif s > expect:
                if nxt is not None and nxt[0] == expect and nxt[1] == self.prev:
                    self.problem(
                        where, "reordered", f"seq {s} comes before seq {expect} (lines swapped)"
                    )
                    self.report.records += 1
                    if expect in self.wanted:
                        self.hash_at[expect] = (hashes[i + 1], _Where(name, i + 2, expect))
                    self._accept(where, h, s)
                    step = 2
                elif linked:
                    self._seq_edited(where, h, s, expect)
                else:
                    missing = f"seq {expect}" if s == expect + 1 else f"seqs {expect}..{s - 1}"
                    gap = Problem(
                        name, i + 1, expect, "deleted", f"{missing} missing before this line"
                    )
                    self.gaps.append((expect, s - 1, gap))
                    self._accept(where, h, s)
            elif (
                not linked
                and self.last is not None
                and p == self.prev2
                and self.last.seq is not None
                and s == self.last.seq
            ):
                self.problem(
                    self.last,
                    "inserted",
                    f"seq {s} appears twice and the next line's prev skips over this one",
                )
                self._accept(where, h, s)
            elif linked and nxt is not None and nxt[1] == self.prev:
                self.problem(
                    where,
                    "inserted",
                    f"seq {s} (expected {expect}) and the next line's prev skips over it",
                )
                self.skip_link = False
            elif linked:
                self._seq_edited(where, h, s, expect)
            else:
                self.problem(where, "reordered", f"seq {s} after seq {expect - 1}")
                self.moved.add(s)
            if _AUDIT_TYPE in lines[i]:
                self._audit_line(where, lines[i], hashes[i - 1] if i > 0 else None)
            i += step

    def _audit_line(self, where: _Where, line: bytes, before: bytes | None) -> None:
        """Collect what the writer's own records say: losses and checkpoints."""
        try:
            record = orjson.loads(line)
        except orjson.JSONDecodeError:
            return
        if not isinstance(record, dict):
            return
        kind, details = record.get("type"), record.get("details")
        if not isinstance(details, dict):
            return
        if kind == "audit.loss" and details.get("reason") == "write_error":
            first, last = details.get("first_seq"), details.get("last_seq")
            if isinstance(first, int) and isinstance(last, int):
                self.losses.append((first, last))
        elif kind == "audit.checkpoint":
            self.log_checkpoints.append((where, details))
            covered = details.get("seq")
            if (
                isinstance(covered, int)
                and before is not None
                and where.seq is not None
                and (covered != where.seq - 1 or details.get("hash") != "sha256:" + before.decode())
            ):
                self.problem(where, "modified", "this checkpoint does not cover the line before it")
        elif kind in ("audit.start", "audit.rotate") and self.report.stream is None:
            stream = details.get("stream")
            if isinstance(stream, str):
                self.report.stream = stream

    def finish(self) -> None:
        """Report the gaps left: not those an ``audit.loss`` explains (a drop the writer
        owned up to), nor those whose lines all turned up later (moved, reported there)."""
        for first, last, gap in self.gaps:
            if any(lo <= first and last <= hi for lo, hi in self.losses):
                continue
            if all(s in self.moved for s in range(first, last + 1)):
                continue
            self.report.problems.append(gap)
