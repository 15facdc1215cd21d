"""A bcc program as kerno-otel loads it: compile and attach, configure, read maps, close."""

from __future__ import annotations

import ctypes
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from kerno_otel import BPFStats, BPFUnavailable
from kerno_otel_plugins.bpf._host import c_source_dir, captured_stderr, compile_error, unavailable


@dataclass(frozen=True)
class Scope:
    """What the program counts (the ``cfg`` map); all zero: everything, every event timed."""

    #: Only this process (sched_delay: this thread); 0: all.
    tgid: int = 0
    #: Only this block device, as the kernel numbers it (``major << 20 | minor``); 0: all.
    dev: int = 0
    #: Only TCP sockets with this local or remote port; 0: all.
    port: int = 0
    #: Time one event in ``sample_mask + 1`` per CPU (a power of two, minus one).
    sample_mask: int = 0


@dataclass(frozen=True)
class Window:
    """What a program derived from two snapshots: values, context, and why others are absent."""

    values: Mapping[str, float]
    context: Mapping[str, Any]
    why_absent: Mapping[str, str]


class BccProgram:
    """One program of ``bpf/``: its C file, the tracepoints it attaches to, how to read it.

    Subclasses name the file and tracepoints, the signals they can give, and
    turn two snapshots of their maps into a :class:`Window`. ``text`` replaces
    the C file (tests inject a broken program with it).
    """

    name: ClassVar[str]
    tracepoints: tuple[str, ...]
    #: Every signal the program can give; what a window lacks is reported absent.
    signals: ClassVar[tuple[str, ...]]
    #: The default sampling (see :class:`Scope`).
    default_sample_mask: ClassVar[int] = 0

    def __init__(self, text: str | None = None, source_dir: Path | None = None) -> None:
        self._text = text
        self._source_dir = source_dir
        self._lock = threading.Lock()
        self.bpf: Any = None
        #: Why the last load failed (None: it did not, or none was tried).
        self.error: str | None = None
        self.tried = False

    @property
    def loaded(self) -> bool:
        return self.bpf is not None

    def text(self) -> str:
        """The C text bcc compiles: ``kerno.h`` then the program."""
        where = self._source_dir or c_source_dir()
        program = self._text
        if program is None:
            program = (where / f"{self.name}.c").read_text(encoding="utf-8")
        return (where / "kerno.h").read_text(encoding="utf-8") + "\n" + program

    def load(self) -> None:
        """Compile and attach (a no-op when loaded); raises with a one-line reason."""
        with self._lock:
            if self.bpf is not None:
                return
            self.tried = True
            try:
                reason = unavailable()
                if reason is not None:
                    raise BPFUnavailable(reason)
                from bcc import BPF  # Debian's python3-bpfcc; absent: `unavailable` said so

                text = self.text()
                with captured_stderr() as printed:
                    try:
                        bpf = BPF(text=text.encode())
                    except Exception as exc:
                        failure: BaseException | None = exc
                    else:
                        failure = None
                if failure is not None:
                    raise RuntimeError(compile_error(printed, failure)) from None
                self.bpf = bpf
                self.configure(Scope(sample_mask=self.default_sample_mask))
                self.started()
                self.error = None
            except Exception as exc:
                lines = [line for line in str(exc).splitlines() if line.strip()]
                self.error = lines[0] if lines else type(exc).__name__
                raise

    def started(self) -> None:
        """Called once loaded (perf buffers are opened here)."""

    def configure(self, scope: Scope) -> None:
        """Set what the program counts (tests narrow it to their own workload)."""
        if self.bpf is None:
            raise RuntimeError(f"{self.name} is not loaded")
        table = self.bpf[b"cfg"]
        table[ctypes.c_int(0)] = table.Leaf(scope.tgid, scope.dev, scope.port, scope.sample_mask)

    def close(self) -> None:
        with self._lock:
            bpf, self.bpf = self.bpf, None
            if bpf is not None:
                bpf.cleanup()

    # -- reading ---------------------------------------------------------------------

    def totals(self, map_name: str) -> list[int]:
        """A per-CPU array summed over CPUs, index by index."""
        table = self.bpf[map_name.encode()]
        try:
            pairs = [(int(getattr(k, "value", k)), sum(v)) for k, v in table.items_lookup_batch()]
        except Exception:  # kernels or maps without batch lookups
            pairs = [(int(getattr(k, "value", k)), sum(v)) for k, v in table.items()]
        out = [0] * len(pairs)
        for key, value in pairs:
            if 0 <= key < len(out):
                out[key] = int(value)
        return out

    def field_totals(self, map_name: str, fields: tuple[str, ...]) -> dict[str, list[int]]:
        """A per-CPU array of structs summed over CPUs, field by field, index by index."""
        table = self.bpf[map_name.encode()]
        try:
            pairs = list(table.items_lookup_batch())
        except Exception:
            pairs = list(table.items())
        out = {name: [0] * len(pairs) for name in fields}
        for key, per_cpu in pairs:
            index = int(getattr(key, "value", key))
            if 0 <= index < len(pairs):
                for name in fields:
                    out[name][index] = int(sum(getattr(v, name) for v in per_cpu))
        return out

    def snapshot(self) -> dict[str, Any]:
        """The program's cumulative counters now."""
        raise NotImplementedError

    def window(self, first: dict[str, Any], last: dict[str, Any], seconds: float) -> Window:
        """What happened between two snapshots ``seconds`` apart."""
        raise NotImplementedError

    def events(self, snap: dict[str, Any]) -> int:
        """How many events a snapshot has counted (``bpf verify``'s events column)."""
        raise NotImplementedError

    def stats(self) -> BPFStats:
        if self.bpf is None:
            return BPFStats(0, 0)
        snap = self.snapshot()
        return BPFStats(self.events(snap), int(snap.get("lost", 0)))
