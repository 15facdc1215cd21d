"""Sequence, chain and encode: the stages that turn a clean record into one hash-chained line.

``seq`` grows by one per record of a stream, across rotations; ``prev`` is the
SHA-256 of the exact bytes of the previous line (without its ``\\n``); the
first record of a stream chains to 64 zeros.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from typing import Any, Final

import orjson

GENESIS: Final = "sha256:" + "0" * 64

#: Key order of a line (DESIGN.md, record format v1). Records are built in this
#: order and orjson keeps insertion order, so encoding needs no sorting.
KEY_ORDER: Final = (
    "v",
    "seq",
    "ts",
    "type",
    "actor",
    "severity",
    "outcome",
    "details",
    "resource",
    "trace_id",
    "span_id",
    "prev",
)


def line_hash(line: bytes) -> str:
    """``sha256:<hex>`` of one line's bytes (without the newline)."""
    return "sha256:" + hashlib.sha256(line).hexdigest()


class Timestamps:
    """RFC 3339 UTC with nanoseconds, formatting the date part once per second.

    Thread-safe: the cached second and its text are replaced together, as one tuple.
    """

    __slots__ = ("_cached",)

    def __init__(self) -> None:
        self._cached: tuple[int, str] = (-1, "")

    def format(self, ns: int) -> str:
        second, frac = divmod(ns, 1_000_000_000)
        cached = self._cached
        if cached[0] != second:
            cached = (second, time.strftime("%Y-%m-%dT%H:%M:%S.", time.gmtime(second)))
            self._cached = cached
        return f"{cached[1]}{frac:09d}Z"


def parse_ts(ts: str) -> int:
    """Nanoseconds since the epoch from a record's ``ts`` (inverse of :meth:`Timestamps.format`)."""
    import calendar

    date, _, frac = ts.rstrip("Z").partition(".")
    seconds = calendar.timegm(time.strptime(date, "%Y-%m-%dT%H:%M:%S"))
    return seconds * 1_000_000_000 + int((frac or "0").ljust(9, "0")[:9])


class Chain:
    """Assigns ``seq`` and ``prev`` and encodes; not thread-safe (the processor holds a lock).

    ``next_seq`` and ``prev`` are where the stream stands: a new stream starts
    at 0 and :data:`GENESIS`; a resumed one continues from its last whole line.
    """

    __slots__ = ("next_seq", "prev")

    def __init__(self, next_seq: int = 0, prev: str = GENESIS) -> None:
        self.next_seq = next_seq
        self.prev = prev

    @property
    def last_seq(self) -> int | None:
        """The seq of the last line sealed, None for a stream with no line yet."""
        return self.next_seq - 1 if self.next_seq else None

    def seal(self, record: dict[str, Any]) -> bytes:
        """Fill in ``seq`` and ``prev``, encode, advance; returns the line without ``\\n``.

        ``record`` must already hold the keys in :data:`KEY_ORDER` order, with
        ``seq`` present (its value is replaced) and ``prev`` last.
        """
        record["seq"] = self.next_seq
        record["prev"] = self.prev
        line = orjson.dumps(record)
        self.prev = "sha256:" + hashlib.sha256(line).hexdigest()
        self.next_seq += 1
        return line


@dataclass(frozen=True)
class ChainProblem:
    """One place where a sequence of lines stops being one unbroken chain."""

    index: int
    seq: int | None
    reason: str


def check_chain(
    lines: list[bytes], start_prev: str = GENESIS, start_seq: int = 0
) -> list[ChainProblem]:
    """Check ``seq`` continuity and every ``prev`` over consecutive lines (no ``\\n``).

    A building block for tests and for ``audit verify``; returns every problem
    found, in order, empty when the chain is whole.
    """
    problems: list[ChainProblem] = []
    prev, expect = start_prev, start_seq
    for i, line in enumerate(lines):
        try:
            record = orjson.loads(line)
        except orjson.JSONDecodeError:
            problems.append(ChainProblem(i, None, "not JSON"))
            prev = line_hash(line)
            expect += 1
            continue
        seq = record.get("seq") if isinstance(record, dict) else None
        if seq != expect:
            problems.append(ChainProblem(i, seq, f"seq {seq}, expected {expect}"))
        if not isinstance(record, dict) or record.get("prev") != prev:
            problems.append(ChainProblem(i, seq, "prev does not match the line before"))
        prev = line_hash(line)
        expect = (seq + 1) if isinstance(seq, int) else expect + 1
    return problems
