"""The lines of a log for reviewers' commands: every stream's files, in chain order.

``audit query`` and ``audit report`` read exactly what ``audit verify`` checks: the
same files (a directory stands for its ``*.jsonl`` and ``*.jsonl.gz`` files), the
same order (``audit.rotate`` links, not names), stream after stream.
"""

from __future__ import annotations

import gzip
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from kerno_otel.verify.order import Stream, stream_files
from kerno_otel.verify.reading import read_all


class ReadError(ValueError):
    """A file that cannot be read at all; the message names it."""


@dataclass(frozen=True)
class Source:
    """The streams of a log, as given on the command line."""

    streams: list[Stream]

    @classmethod
    def open(cls, paths: Sequence[str | Path]) -> Source:
        """Raises :class:`~kerno_otel.verify.order.VerifyError` for a missing path."""
        found, _ = stream_files(paths)
        return cls(found)

    @property
    def files(self) -> list[str]:
        return [f.display for s in self.streams for f in s.files]

    @property
    def total_bytes(self) -> int:
        return sum(f.size for s in self.streams for f in s.files)

    def contents(
        self, progress: Callable[[int], None] | None = None
    ) -> Iterator[tuple[str, bytes]]:
        """(file name, whole decompressed content) per file, in chain order.

        ``progress(bytes_done)`` is called after each file (on-disk bytes).
        """
        done = 0
        for stream in self.streams:
            for f in stream.files:
                try:
                    data = read_all(str(f.path))
                except (OSError, EOFError, gzip.BadGzipFile, zlib.error) as e:
                    reason = getattr(e, "strerror", None) or type(e).__name__
                    raise ReadError(f"{f.display}: cannot be read: {reason}") from None
                yield f.display, data
                done += f.size
                if progress is not None:
                    progress(done)


def lines_of(data: bytes) -> list[bytes]:
    """The lines of a file's content, without newlines (a torn last line included)."""
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    return lines
