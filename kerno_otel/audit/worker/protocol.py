"""The audit worker's wire protocol: one frame per line, a kind byte, then its payload.

Parent → worker, in the order the parent decided (the worker seals in that order).
The worker is two processes: the clean stage turns each ``RAW`` frame into a
``RECORD`` or a ``REFUSE`` and passes every other frame on as it is, one frame
out for each frame in; the seal stage takes the rest.

=========  ==============================================================
``INIT``   JSON: :class:`Init` (the first frame)
``RAW``    JSON array: a record's fields as emitted, not yet cleaned
``RECORD`` a clean record's body (:func:`kerno_otel.audit.chain.body_of`)
``REFUSE`` JSON: ``type`` (or null), ``problem``: a record that may not be written
``DROP``   JSON: ``types``: records dropped here at ``queue_size`` (``drop``)
``FLUSH``  JSON: ``id``, ``timeout_ms``: answer once everything before is durable
``STATS``  JSON: ``id``: answer with the counters
``CLOSE``  finish the log (last checkpoint, fsync) and answer ``CLOSED``
=========  ==============================================================

Worker → parent: ``READY`` or ``ERROR`` (JSON ``kind``, ``message``) once;
then ``STDERR`` (JSON text), ``TAKEN`` (frames taken in so far: the parent's
``queue_size`` bound), ``DURABLE`` (the parent's records on disk so far),
``FLUSHED`` (JSON ``id``, ``ok``), ``STATS`` (JSON ``id``, ``stats``) and ``CLOSED``
(JSON ``stats``). A body never holds a newline (the encoder escapes them), so
a frame is a line, and the kind byte alone says what it is.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import Any, Final

import orjson

from kerno_otel.config import AuditConfig, CheckpointConfig
from kerno_otel.records.catalogue import EventType
from kerno_otel.records.redact import RedactionRule

# Parent → worker.
INIT: Final = b"I"
RAW: Final = b"W"
RECORD: Final = b"R"
REFUSE: Final = b"X"
DROP: Final = b"D"
FLUSH: Final = b"F"
STATS: Final = b"S"
CLOSE: Final = b"C"
# Worker → parent (STATS answers with the same kind).
READY: Final = b"Y"
ERROR: Final = b"E"
STDERR: Final = b"2"
TAKEN: Final = b"T"
DURABLE: Final = b"U"
FLUSHED: Final = b"f"
CLOSED: Final = b"Z"

#: Bytes asked for per read (a pipe holds at most 1 MiB unprivileged).
READ_SIZE: Final = 1 << 20


def frame(kind: bytes, payload: bytes = b"") -> bytes:
    """One frame: ``kind`` + ``payload`` + newline (``payload`` holds no newline)."""
    return kind + payload + b"\n"


def message(kind: bytes, value: Any) -> bytes:
    """A frame whose payload is ``value`` as JSON."""
    return kind + orjson.dumps(value) + b"\n"


def value(payload: bytes) -> Any:
    """The JSON value of a :func:`message` frame's payload."""
    return orjson.loads(payload)


class FrameReader:
    """Whole frames from a blocking file descriptor, as (kind, payload) pairs."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self._rest = b""

    def batches(self) -> Iterator[list[bytes]]:
        """Lists of whole frames (without newline), one list per read, until end of input."""
        if b"\n" in self._rest:  # left over from next_frame
            lines = self._rest.split(b"\n")
            self._rest = lines.pop()
            yield lines
        while True:
            try:
                data = os.read(self.fd, READ_SIZE)
            except OSError:
                data = b""
            if not data:
                return
            lines = (self._rest + data).split(b"\n")
            self._rest = lines.pop()
            if lines:
                yield lines

    def frames(self) -> Iterator[tuple[bytes, bytes]]:
        """(kind, payload) for each frame until end of input."""
        for lines in self.batches():
            for line in lines:
                yield line[:1], line[1:]

    def next_frame(self) -> tuple[bytes, bytes] | None:
        """The next frame, or None at end of input (reads no further than that frame)."""
        while b"\n" not in self._rest:
            try:
                data = os.read(self.fd, READ_SIZE)
            except OSError:
                data = b""
            if not data:
                return None
            self._rest += data
        line, _, self._rest = self._rest.partition(b"\n")
        return line[:1], line[1:]


@dataclass(frozen=True)
class Init:
    """What the worker's stages need: the audit config, the plugins' event types and
    redaction rules, the stream's resource and the writer's version."""

    config: AuditConfig
    event_types: tuple[EventType, ...]
    rules: tuple[RedactionRule, ...]
    resource: dict[str, str]
    version: str

    def frame(self) -> bytes:
        """The ``INIT`` frame."""
        return message(INIT, asdict(self))

    @classmethod
    def read(cls, payload: bytes) -> Init:
        """The :class:`Init` of an ``INIT`` frame's payload."""
        data = value(payload)
        config = dict(data["config"])
        config["redaction"] = tuple(RedactionRule(**r) for r in config.get("redaction", ()))
        config["checkpoint"] = CheckpointConfig(**config.get("checkpoint", {}))
        return cls(
            AuditConfig(**config),
            tuple(EventType(**t) for t in data["event_types"]),
            tuple(RedactionRule(**r) for r in data["rules"]),
            dict(data["resource"]),
            str(data["version"]),
        )


def records_in(frame: bytes) -> int:
    """How many of the parent's records a frame (kind byte first, no newline) carries."""
    kind = frame[:1]
    if kind in (RAW, RECORD, REFUSE):
        return 1
    if kind == DROP:
        return sum(value(frame[1:])["types"].values())
    return 0
