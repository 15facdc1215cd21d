"""Checking the files of a log on several cores: each file on its own, in a worker process.

A rotated file is independent of the others except at its first line (which must
continue the seq and link to the hash of the file before). So a worker reads,
decompresses and hashes a whole file and says whether it is whole by itself
(:func:`~kerno_otel.verify.walk.summarize`); the parent only checks the joints and
the writer's own records, in chain order. A file that is not whole by itself, or
does not join, is walked line by line in the parent to say where and how.
"""

from __future__ import annotations

import ctypes
import itertools
import multiprocessing
import os
import zlib
from collections.abc import Callable, Collection, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from pathlib import Path
from typing import Final

from kerno_otel.verify.reading import GZIP_MAGIC, read_all
from kerno_otel.verify.walk import Summary, join, summarize

#: Below this many bytes a pool costs more than it saves (process start, imports).
PARALLEL_MIN_BYTES: Final = 8 * 1024 * 1024
#: Plain files are cut into pieces of about this size, so that every core stays busy
#: to the end (a 100 MB file and four smaller ones would leave a core idle).
CHUNK_BYTES: Final = 24 * 1024 * 1024

Pending = Callable[[], Summary | None]


def summarize_file(path: str, wanted: Collection[int]) -> Summary | None:
    """:func:`summarize` of one file; None when it cannot be read (the walk says why)."""
    try:
        data = read_all(path)
    except (OSError, EOFError, zlib.error):  # the walk reads it again and says why
        return None
    return summarize(data, wanted)


def summarize_range(path: str, start: int, end: int, wanted: Collection[int]) -> Summary | None:
    """:func:`summarize` of the lines of a plain file that start in ``[start, end)``."""
    try:
        with open(path, "rb") as f:
            f.seek(max(start - 1, 0))
            data = f.read(end - max(start - 1, 0))
            while data and not data.endswith(b"\n"):
                more = f.read(1 << 16)
                if not more:
                    break
                data += more.partition(b"\n")[0] + (b"\n" if b"\n" in more else b"")
    except OSError:
        return None
    if start > 0:
        # The byte before ``start`` decides: a newline there means a line starts at
        # ``start``; otherwise the line under way belongs to the piece before.
        cut = data.find(b"\n")
        data = data[cut + 1 :] if cut >= 0 else b""
    if not data:
        return None
    return summarize(data, wanted)


def _pieces(path: Path) -> list[tuple[int, int]] | None:
    """Byte ranges to summarize apart: for a big plain file, else None (whole file)."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            magic = f.read(2)
    except OSError:
        return None
    if size <= CHUNK_BYTES * 1.5 or magic == GZIP_MAGIC or path.name.endswith(".gz"):
        return None
    count = round(size / CHUNK_BYTES)
    bounds = [size * i // count for i in range(count + 1)]
    return list(itertools.pairwise(bounds))


def _keep_heap() -> None:
    """In a worker: keep freed memory for the next piece instead of handing it back to
    the kernel and faulting it in again (glibc's mmap and trim thresholds raised to
    1 GiB); about 12% less CPU per piece. A worker lives as long as one verify."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-3, 1 << 30)  # M_MMAP_THRESHOLD
        libc.mallopt(-1, 1 << 30)  # M_TRIM_THRESHOLD
    except (OSError, AttributeError):  # not glibc: the default allocator it is
        pass


def _worker_count(workers: int | None, total_bytes: int) -> int:
    if workers is not None:
        return max(1, workers)
    if total_bytes < PARALLEL_MIN_BYTES:
        return 1
    return os.cpu_count() or 1


class Summaries:
    """Where files get summarized: a process pool, or the calling process (lazily)."""

    def __init__(self, workers: int | None, total_bytes: int) -> None:
        self.workers = _worker_count(workers, total_bytes)
        self._pool: ProcessPoolExecutor | None = None

    def __enter__(self) -> Summaries:
        if self.workers > 1:
            # fork: no re-import, and no re-run of the __main__ module (spawn and
            # forkserver would run the CLI's entry point again in each worker). Safe with
            # the progress bar's thread alive: a worker only reads a file and hashes it,
            # touching no lock that thread could hold (no stdio, no logging).
            self._pool = ProcessPoolExecutor(
                self.workers, mp_context=multiprocessing.get_context("fork"), initializer=_keep_heap
            )
        return self

    def __exit__(self, *exc: object) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)

    def submit(self, paths: Sequence[Path], wanted: Collection[int]) -> list[Pending]:
        """One callable per path, in order, each returning that file's summary."""
        if self._pool is None or len(paths) < 2:
            return [_later(str(p), wanted) for p in paths]
        frozen = frozenset(wanted)
        pending: list[Pending] = []
        for p in paths:
            pieces = _pieces(p)
            if pieces is None:
                pending.append(_result_of([self._pool.submit(summarize_file, str(p), frozen)]))
            else:
                pending.append(
                    _result_of(
                        [
                            self._pool.submit(summarize_range, str(p), a, b, frozen)
                            for a, b in pieces
                        ]
                    )
                )
        return pending


def _later(path: str, wanted: Collection[int]) -> Pending:
    return lambda: summarize_file(path, wanted)


def _result_of(futures: list[Future[Summary | None]]) -> Pending:
    """The file's summary: its pieces' summaries joined (None when any is missing)."""

    def result() -> Summary | None:
        try:
            parts = [f.result() for f in futures]
        except Exception:  # a worker died (killed, out of memory): walk it here instead
            return None
        return join(parts)

    return result
