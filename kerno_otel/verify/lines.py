"""``audit validate``'s reading of a log: why each line is, or is not, a valid record."""

from __future__ import annotations

import gzip
import zlib
from collections.abc import Callable, Iterator, Mapping
from typing import IO, Any

import orjson

#: A record check: None when the record is valid, else the reason (the validators' ``check``).
Check = Callable[[Mapping[str, Any]], str | None]

_JSON_TYPES = {dict: "object", list: "array", str: "string", int: "number", float: "number"}


def line_results(stream: IO[bytes], check: Check) -> Iterator[tuple[int, str | None]]:
    """(line number, None or the reason it is bad) for every line of ``stream``."""
    lineno = 0
    try:
        for lineno, line in enumerate(stream, 1):
            if line.endswith(b"\n"):
                yield lineno, line_reason(line[:-1], check)
            elif line_reason(line, check) is None:
                yield lineno, "missing final newline"
            else:
                # What a crash mid-write leaves; the writer sets it aside on start.
                yield lineno, "torn last line (no final newline)"
    except EOFError:
        yield lineno + 1, "gzip data truncated"
    except (gzip.BadGzipFile, zlib.error):
        yield lineno + 1, "not valid gzip data"


def line_reason(line: bytes, check: Check) -> str | None:
    """Why one line (without its newline) is not a valid record; None when it is.

    The reason never quotes the line: it may hold what redaction should have removed.
    """
    if not line.strip():
        return "empty line"
    try:
        record = orjson.loads(line)
    except orjson.JSONDecodeError as e:
        try:
            line.decode("utf-8")
        except UnicodeDecodeError as u:
            return f"not valid UTF-8 (byte {u.start + 1})"
        # The position only: the parser's message may quote the line.
        return f"not valid JSON (column {e.colno})"
    if not isinstance(record, dict):
        kind = "null" if record is None else "boolean" if isinstance(record, bool) else None
        return f"not a JSON object ({kind or _JSON_TYPES.get(type(record), 'value')})"
    return check(record)
