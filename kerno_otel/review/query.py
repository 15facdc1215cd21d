"""``audit query``: the records of a log that match every filter given, in chain order.

Filters of one kind are alternatives (``--type a --type b``: either), filters of
different kinds must all hold. In a file whose every line is in the writer's layout,
the lines holding the ``type`` asked for are found by a byte search over the whole
file, so only those are parsed; the parsed record decides.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final

import orjson

from kerno_otel.records.catalogue import OUTCOMES
from kerno_otel.review.reading import Source, lines_of

_TYPE_RE: Final = re.compile(r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)*(\.\*)?$")
_SEQ_RANGE_RE: Final = re.compile(r"^([0-9]*)-([0-9]*)$|^([0-9]+)$")
_FIELD_RE: Final = re.compile(r"^[A-Za-z0-9_]+(\.[A-Za-z0-9_]+)*$")
_WRITER_HEAD: Final = b'{"v":"1","seq":'


class FilterError(ValueError):
    """A filter that cannot mean anything; the message names the option and the rule."""


@dataclass(frozen=True)
class Where:
    """``details.FIELD=VALUE``: FIELD a dotted path under ``details``."""

    path: tuple[str, ...]
    value: str

    def holds(self, details: Any) -> bool:
        return _holds(details, self.path, self.value)


def _holds(node: Any, path: tuple[str, ...], text: str) -> bool:
    """Whether the value at ``path`` under ``node`` reads as ``text``; an array on the way
    holds when one element does (``details.changes.field`` of a ``config.reload``)."""
    if not path:
        return _equals(node, text)
    if isinstance(node, list):
        return any(_holds(item, path, text) for item in node)
    if not isinstance(node, dict) or path[0] not in node:
        return False
    return _holds(node[path[0]], path[1:], text)


def _equals(node: Any, text: str) -> bool:
    """Whether a JSON value reads as ``text`` (an array: when any element does)."""
    if isinstance(node, bool):
        return text == ("true" if node else "false")
    if node is None:
        return text == "null"
    if isinstance(node, str):
        return node == text
    if isinstance(node, int | float):
        try:
            return float(text) == float(node)
        except ValueError:
            return False
    if isinstance(node, list):
        return any(_equals(item, text) for item in node)
    return False


@dataclass(frozen=True)
class Filters:
    """What ``audit query`` keeps; build with :meth:`parse`. No filter: every record."""

    types: tuple[str, ...] = ()
    actors: tuple[str, ...] = ()
    outcomes: tuple[str, ...] = ()
    since: str | None = None  # a record ts at or after this (normalized, UTC)
    until: str | None = None  # a record ts strictly before this
    cycle_ids: tuple[str, ...] = ()
    seq_first: int | None = None
    seq_last: int | None = None
    where: tuple[Where, ...] = ()
    _needles: tuple[bytes, ...] = field(default=(), repr=False)

    @classmethod
    def parse(
        cls,
        *,
        types: Sequence[str] = (),
        actors: Sequence[str] = (),
        outcomes: Sequence[str] = (),
        since: str | None = None,
        until: str | None = None,
        cycle_ids: Sequence[str] = (),
        seq_range: str | None = None,
        where: Sequence[str] = (),
    ) -> Filters:
        """Check and normalize the filters as typed; raises :class:`FilterError`."""
        for t in types:
            if not _TYPE_RE.match(t):
                raise FilterError(
                    f"--type {t!r}: not an event type (e.g. ai.call, or audit.* for a family)"
                )
        for o in outcomes:
            if o not in OUTCOMES:
                raise FilterError(f"--outcome {o!r}: expected one of {', '.join(OUTCOMES)}")
        for a in actors:
            if not a or any(c.isspace() for c in a):
                raise FilterError(f"--actor {a!r}: expected an actor such as ai/analyzer")
        first = last = None
        if seq_range is not None:
            first, last = _seq_range(seq_range)
        since_ts = _timestamp("--since", since) if since is not None else None
        until_ts = _timestamp("--until", until) if until is not None else None
        if since_ts is not None and until_ts is not None and since_ts >= until_ts:
            raise FilterError(f"--since {since} is not before --until {until}")
        needles = tuple(
            b'"type":"' + (t[:-1] if t.endswith("*") else t + '"').encode() for t in types
        )
        return cls(
            tuple(types),
            tuple(actors),
            tuple(outcomes),
            since_ts,
            until_ts,
            tuple(cycle_ids),
            first,
            last,
            tuple(_where(w) for w in where),
            needles,
        )

    @property
    def types_only(self) -> bool:
        """Only exact ``--type`` filters: a line can be judged without parsing it."""
        return (
            bool(self.types)
            and not any(t.endswith("*") for t in self.types)
            and not (self.actors or self.outcomes or self.since or self.until)
            and not (self.cycle_ids or self.where)
            and self.seq_first is None
            and self.seq_last is None
        )

    def matches(self, record: dict[str, Any]) -> bool:
        if self.types and not any(_type_matches(t, record.get("type")) for t in self.types):
            return False
        if self.actors and not any(_actor_matches(a, record.get("actor")) for a in self.actors):
            return False
        if self.outcomes and record.get("outcome") not in self.outcomes:
            return False
        ts = record.get("ts")
        if self.since is not None and not (isinstance(ts, str) and ts >= self.since):
            return False
        if self.until is not None and not (isinstance(ts, str) and ts < self.until):
            return False
        details = record.get("details")
        if self.cycle_ids and not (
            isinstance(details, dict) and details.get("cycle_id") in self.cycle_ids
        ):
            return False
        if self.seq_first is not None or self.seq_last is not None:
            seq = record.get("seq")
            if not isinstance(seq, int) or isinstance(seq, bool):
                return False
            if self.seq_first is not None and seq < self.seq_first:
                return False
            if self.seq_last is not None and seq > self.seq_last:
                return False
        return all(w.holds(details) for w in self.where)


def _type_matches(pattern: str, value: Any) -> bool:
    if not isinstance(value, str):
        return False
    if pattern.endswith(".*"):
        return value.startswith(pattern[:-1])
    return value == pattern


def _actor_matches(pattern: str, value: Any) -> bool:
    if not isinstance(value, str):
        return False
    if pattern.endswith("*"):
        return value.startswith(pattern[:-1])
    return value == pattern


def _seq_range(text: str) -> tuple[int | None, int | None]:
    m = _SEQ_RANGE_RE.match(text)
    if m is None or text == "-":
        raise FilterError(
            f"--seq-range {text!r}: expected A-B, A- or -B with whole numbers (e.g. 100-200)"
        )
    if m.group(3) is not None:
        n = int(m.group(3))
        return n, n
    first = int(m.group(1)) if m.group(1) else None
    last = int(m.group(2)) if m.group(2) else None
    if first is not None and last is not None and first > last:
        raise FilterError(f"--seq-range {text!r}: {first} is after {last}")
    return first, last


_TIME_RE: Final = re.compile(
    r"^(\d{4}-\d\d-\d\d)(?:[Tt ](\d\d:\d\d(?::\d\d)?)(?:\.(\d{1,9}))?)?"
    r"(Z|z|[+-]\d\d:?\d\d)?$"
)


def _timestamp(option: str, text: str) -> str:
    """A time as typed (RFC 3339, or a date) as the log writes ``ts``: UTC, nanoseconds.

    The fraction is kept to the nanosecond (``datetime`` stops at microseconds), so a
    ``ts`` copied from a record selects exactly that record and those after it.
    """
    m = _TIME_RE.match(text)
    moment = None
    if m is not None:
        date, clock, _, zone = m.groups()
        zone = "+00:00" if zone in (None, "Z", "z") else zone
        try:
            moment = datetime.fromisoformat(f"{date}T{clock or '00:00'}{zone}")
        except ValueError:
            moment = None
    if m is None or moment is None:
        raise FilterError(
            f"{option} {text!r}: expected a date or an RFC 3339 time "
            "(2026-07-01, 2026-07-01T12:00:00Z)"
        )
    nanos = (m.group(3) or "").ljust(9, "0")
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + nanos + "Z"


def _where(text: str) -> Where:
    name, eq, value = text.partition("=")
    if not eq:
        raise FilterError(f"--where {text!r}: expected details.FIELD=VALUE")
    if not name.startswith("details.") or not _FIELD_RE.match(name[8:]):
        raise FilterError(
            f"--where {text!r}: the field must be under details, as details.FIELD "
            "(e.g. details.provider=openai)"
        )
    return Where(tuple(name[8:].split(".")), value)


@dataclass(frozen=True)
class Match:
    """One record kept: where it is and its exact line (parsed when asked for)."""

    file: str
    line: int
    raw: bytes
    parsed: dict[str, Any] | None = None

    @property
    def record(self) -> dict[str, Any]:
        if self.parsed is not None:
            return self.parsed
        record = orjson.loads(self.raw)
        assert isinstance(record, dict)
        return record


@dataclass
class Tally:
    """What a query went through: records read, kept, and lines that were not records."""

    records: int = 0
    matched: int = 0
    not_records: list[tuple[str, int]] = field(default_factory=list)


def run(
    source: Source,
    filters: Filters,
    tally: Tally,
    progress: Callable[[int], None] | None = None,
) -> Iterator[Match]:
    """The matching records of ``source``, in chain order; counts go to ``tally``."""
    loads = orjson.loads
    matches = filters.matches
    for name, data in source.contents(progress):
        count = data.count(b"\n") + (1 if data and not data.endswith(b"\n") else 0)
        tally.records += count
        if filters._needles and _writer_layout(data, count):
            candidates = _needle_lines(data, filters._needles)
            if filters.types_only:
                # The type is the only filter and each candidate line holds it where
                # the writer puts the record's own type: no need to parse it.
                for index, line in candidates:
                    if _type_in_place(line, filters._needles):
                        tally.matched += 1
                        yield Match(name, index + 1, line)
                continue
        else:
            candidates = enumerate(lines_of(data))
        for index, line in candidates:
            try:
                record = loads(line)
            except orjson.JSONDecodeError:
                record = None
            if not isinstance(record, dict):
                tally.records -= 1
                tally.not_records.append((name, index + 1))
                continue
            if matches(record):
                tally.matched += 1
                yield Match(name, index + 1, line, record)


def _type_in_place(line: bytes, needles: tuple[bytes, ...]) -> bool:
    """Whether the line's own ``type`` (right after the 30-character ``ts``, as the
    writer lays a record out) is one of the exact types asked for."""
    at = line.find(b',"type":"')
    if at < 0 or line[at - 38 : at - 32] != b',"ts":' or line[at - 1 : at] != b'"':
        return False
    return any(line.startswith(needle, at + 1) for needle in needles)


def _writer_layout(data: bytes, count: int) -> bool:
    """Whether every line starts as the writer writes it (counted in C, not per line)."""
    return data.startswith(_WRITER_HEAD) and data.count(b"\n" + _WRITER_HEAD) == count - 1


def _needle_lines(data: bytes, needles: tuple[bytes, ...]) -> Iterator[tuple[int, bytes]]:
    """(0-based index, line) of each line holding one of ``needles``, in order: the
    search runs in C over the whole file, so lines without one cost nothing."""
    starts: set[int] = set()
    for needle in needles:
        at = data.find(needle)
        while at >= 0:
            start = data.rfind(b"\n", 0, at) + 1
            starts.add(start)
            end = data.find(b"\n", at)
            if end < 0:
                break
            at = data.find(needle, end)
    index = counted = 0
    for start in sorted(starts):
        index += data.count(b"\n", counted, start)
        counted = start
        end = data.find(b"\n", start)
        yield index, data[start : end if end >= 0 else len(data)]
