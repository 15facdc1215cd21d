"""Shared test helpers: read a whole log stream back in order, check its chain, wait for
checkpoints."""

from __future__ import annotations

import gzip
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from kerno_otel.audit.chain import GENESIS, line_hash
from kerno_otel.audit.checkpoints import read_sidecar, sidecar_path
from kerno_otel.audit.files import rotated_files
from kerno_otel.audit.log import AuditLog


def stream_lines(live: Path) -> list[bytes]:
    """Every line of the stream (rotated files oldest first, then the live file), no newlines."""
    lines, torn = _read_stream(live)
    assert torn is None, f"{torn} does not end with a newline"
    return lines


def stream_lines_after_kill(live: Path) -> tuple[list[bytes], bool]:
    """The whole lines of a stream whose writer was just killed, and whether it ends torn.

    ``kill -9`` can land inside a ``write()`` (the kernel stops a write to a regular file
    between pages when a fatal signal is pending), so the newest non-empty file may end
    in part of a line; the next start cuts that off (``audit.recover``). Only that last
    file may be torn: a torn line anywhere earlier is still an error.
    """
    lines, torn = _read_stream(live)
    return lines, torn is not None


def _read_stream(live: Path) -> tuple[list[bytes], Path | None]:
    lines: list[bytes] = []
    torn: Path | None = None
    for path in [*rotated_files(live), live]:
        if not path.exists():
            continue
        data = (
            gzip.decompress(path.read_bytes()) if path.name.endswith(".gz") else path.read_bytes()
        )
        if data == b"":
            continue
        assert torn is None, f"{torn} ends torn but a later file, {path}, has lines"
        whole, _, tail = data.rpartition(b"\n")
        if tail:
            torn = path
        lines.extend(whole.splitlines())
    return lines, torn


def stream_records(live: Path) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in stream_lines(live)]


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

    Every problem found, in order; empty when the chain is whole. A second
    opinion on what the writer produced, independent of ``audit verify``'s walk.
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


class CheckpointWatch:
    """The signed checkpoints a log has made durable (its ``.checkpoints`` file), to wait on.

    The writer appends a checkpoint to that file once its log line is durable, so a
    checkpoint seen here is on disk in both files.
    """

    def __init__(self, log: AuditLog) -> None:
        self._path = sidecar_path(Path(log.config.file_path))

    def _seen(self) -> list[dict[str, Any]]:
        if not self._path.exists():
            return []
        return [item for _, item in read_sidecar(self._path) if item is not None]

    def wait_for(
        self, done: Callable[[list[dict[str, Any]]], bool], timeout: float = 20.0
    ) -> list[dict[str, Any]]:
        """The checkpoints so far, once ``done(checkpoints)`` holds; fails after ``timeout``."""
        assert wait_until(lambda: done(self._seen()), timeout), f"checkpoints: {self._seen()!r}"
        return self._seen()


def fake_distribution(site: Path, name: str, version: str, modules: dict[str, str]) -> None:
    """A minimal installed distribution under ``site`` (put it on PYTHONPATH).

    importlib.metadata finds ``*.dist-info`` directories on sys.path, so the
    entry points in it load exactly as a pip-installed plugin's would, without
    touching the test environment.
    """
    site.mkdir(parents=True, exist_ok=True)
    info = site / f"{name.replace('-', '_')}-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    lines = ["[kerno_otel.plugins]"]
    for module, source in modules.items():
        (site / f"{module}.py").write_text(source)
        lines.append(f"{module.removeprefix('kerno_test_')} = {module}")
    (info / "entry_points.txt").write_text("\n".join(lines) + "\n")


def wait_until(condition: Callable[[], bool], timeout: float = 30.0) -> bool:
    """Wait for ``condition`` to hold (checked every few ms), at most ``timeout`` seconds.

    For states nothing signals (another process's progress, a thread blocked inside
    the code under test): the wait ends as soon as the state is reached, not after a
    guessed delay.
    """
    deadline = time.monotonic() + timeout
    tick = threading.Event()
    while not condition():
        if time.monotonic() >= deadline:
            return False
        tick.wait(0.005)
    return True


#: ``doctor.thresholds`` lines (under ``  thresholds:``) that no host reaches: a test that
#: forces one finding (``oom_memory_pct: 0``) then sees only that one, whatever else the
#: machine running the suite is doing (open files growing, retransmits, slow disks).
QUIET_THRESHOLDS = "".join(
    f"    {name}: {value}\n"
    for name, value in {
        "fd_growth_per_sec": 1_000_000_000,
        "tcp_retransmit_pct": 100,
        "syscall_p99_warning_ns": 3_600_000_000_000,
        "syscall_p99_critical_ns": 3_600_000_000_000,
        "disk_p99_warning_ns": 3_600_000_000_000,
        "disk_p99_critical_ns": 3_600_000_000_000,
        "sched_delay_warning_ns": 3_600_000_000_000,
        "sched_delay_critical_ns": 3_600_000_000_000,
    }.items()
)
