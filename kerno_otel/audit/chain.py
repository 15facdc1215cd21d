"""Sequence, chain and encode: the stages that turn a clean record into one hash-chained line.

``seq`` grows by one per record of a stream, across rotations; ``prev`` is the
SHA-256 of the exact bytes of the previous line (without its ``\\n``); the
first record of a stream chains to 64 zeros.
"""

from __future__ import annotations

import hashlib
import time
from typing import Any, Final

import orjson

GENESIS: Final = "sha256:" + "0" * 64

#: Key order of a line (record format v1, docs/audit-schema.md). Records are built in this
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


#: What every line starts and ends with before it is sealed: the encoder writes
#: ``seq`` 0 and a :data:`GENESIS` ``prev`` as placeholders, and a body is what lies
#: between (see :func:`body_of`).
_HEAD: Final = b'{"v":"1","seq":0,'
_TAIL: Final = b',"prev":"' + GENESIS.encode() + b'"}'
_LINE: Final = b'{"v":"1","seq":%d,%b,"prev":"%b"}'


def body_of(record: dict[str, Any]) -> bytes:
    """The encoded record between ``seq`` and ``prev``: what sealing needs, and all it needs.

    ``record`` holds the keys in :data:`KEY_ORDER` order with ``seq`` 0 and ``prev``
    :data:`GENESIS` (the placeholders :func:`kerno_otel.audit.record.Cleaner` builds).
    A body is a JSON fragment without a newline (the encoder escapes them), so it
    crosses the audit worker's pipe as it is. Raises ``ValueError`` for anything else.
    """
    line = orjson.dumps(record)
    if not (line.startswith(_HEAD) and line.endswith(_TAIL)):
        raise ValueError("record keys are not in line order")
    return line[len(_HEAD) : -len(_TAIL)]


class Chain:
    """Assigns ``seq`` and ``prev`` to encoded bodies; not thread-safe (the sealer holds a lock).

    ``next_seq`` and ``prev`` are where the stream stands: a new stream starts
    at 0 and :data:`GENESIS`; a resumed one continues from its last whole line.
    """

    __slots__ = ("_prev", "next_seq")

    def __init__(self, next_seq: int = 0, prev: str = GENESIS) -> None:
        self.next_seq = next_seq
        self._prev = prev.encode("ascii")

    @property
    def prev(self) -> str:
        """``sha256:<hex>`` of the last line sealed (:data:`GENESIS` before the first)."""
        return self._prev.decode("ascii")

    @property
    def last_seq(self) -> int | None:
        """The seq of the last line sealed, None for a stream with no line yet."""
        return self.next_seq - 1 if self.next_seq else None

    def seal_body(self, body: bytes) -> bytes:
        """The line for ``body`` (see :func:`body_of`) at the next seq; advances the chain.

        The bytes are exactly what encoding the whole record would give: the
        body sits between ``"seq":N,`` and ``,"prev":"…"``.
        """
        line = _LINE % (self.next_seq, body, self._prev)
        self._prev = b"sha256:" + hashlib.sha256(line).hexdigest().encode("ascii")
        self.next_seq += 1
        return line

    def seal(self, record: dict[str, Any]) -> bytes:
        """Seal a whole record (keys in line order); returns the line without ``\\n``."""
        record = {**record, "seq": 0, "prev": GENESIS}
        return self.seal_body(body_of(record))
