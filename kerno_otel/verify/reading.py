"""Reading audit logs back: plain or gzip (by name or content), files or standard input.

Shared by ``audit validate`` and ``audit verify``; writing lives in ``_files``.
"""

from __future__ import annotations

import contextlib
import gzip
import io
import sys
from collections.abc import Iterator
from typing import IO, Final, cast

GZIP_MAGIC: Final = b"\x1f\x8b"
STDIN_NAME: Final = "<stdin>"


def check_readable(name: str) -> None:
    """Raise ``OSError`` when ``name`` cannot be opened for reading (``-`` is standard input)."""
    if name == "-":
        return
    with open(name, "rb"):
        pass


@contextlib.contextmanager
def open_log(name: str) -> Iterator[tuple[IO[bytes], IO[bytes]]]:
    """(lines to read, the underlying file: for progress) of a plain or gzip log.

    ``-`` is standard input. Raises ``OSError`` when the file cannot be opened.
    """
    raw: IO[bytes] = sys.stdin.buffer if name == "-" else open(name, "rb")  # noqa: SIM115
    try:
        # Sniff gzip too: a compressed log piped in, or renamed, is still read.
        magic = raw.peek(2)[:2] if isinstance(raw, io.BufferedReader) else b""
        if name.endswith(".gz") or magic == GZIP_MAGIC:
            with gzip.GzipFile(fileobj=raw, mode="rb") as stream:
                yield cast(IO[bytes], stream), raw
        else:
            yield raw, raw
    finally:
        if name != "-":
            raw.close()


def read_all(name: str) -> bytes:
    """The whole (decompressed) content of a log file. Raises ``OSError``, ``EOFError``
    (gzip data cut short) or ``gzip.BadGzipFile``."""
    with open_log(name) as (stream, _):
        return stream.read()


def first_line(name: str) -> bytes:
    """The first line of a log file, with its newline if it has one (b"" when empty)."""
    with open_log(name) as (stream, _):
        return stream.readline()
