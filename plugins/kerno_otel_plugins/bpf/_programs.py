"""The six programs of ``bpf/``: what each attaches to, and what its maps mean as signals.

Each snapshot is cumulative since load; a window is the difference of two. The
kernel side aggregates (histograms, counters); nothing here sees single
events except OOM victims, which are rare.
"""

from __future__ import annotations

import contextlib
import ctypes
import threading
from collections import deque
from pathlib import Path
from typing import Any, Final

from kerno_otel import BPFStats
from kerno_otel_plugins.bpf import _hist
from kerno_otel_plugins.bpf._program import BccProgram, Window

#: How many processes or syscalls a window's context lists.
TOP: Final = 5


def _syscall_name(nr: int) -> str:
    try:
        from bcc.syscall import syscall_name

        return str(syscall_name(nr).decode("ascii", "replace"))
    except Exception:
        return f"syscall_{nr}"


def _latency(prefix: str, counts: list[int], values: dict[str, float]) -> int:
    samples = sum(counts)
    if samples:
        values[f"{prefix}p99_ns"] = float(_hist.percentile(counts, 99.0) or 0.0)
        values[f"{prefix}p50_ns"] = float(_hist.percentile(counts, 50.0) or 0.0)
    return samples


class SyscallLatency(BccProgram):
    """Per-syscall calls and errors (every call), latency of one call in 64 per CPU."""

    name = "syscall_latency"
    tracepoints = ("raw_syscalls:sys_enter", "raw_syscalls:sys_exit")
    signals = (
        "syscall.count",
        "syscall.per_sec",
        "syscall.errors",
        "syscall.error_pct",
        "syscall.p99_ns",
        "syscall.p50_ns",
        "syscall.latency_samples",
    )
    default_sample_mask = 63

    def snapshot(self) -> dict[str, Any]:
        counted = self.field_totals("calls", ("calls", "errors"))
        return {
            "calls": counted["calls"],
            "errors": counted["errors"],
            "hist": self.totals("hist"),
            "lost": sum(self.totals("lost")),
        }

    def events(self, snap: dict[str, Any]) -> int:
        return int(sum(snap["calls"]))

    def window(self, first: dict[str, Any], last: dict[str, Any], seconds: float) -> Window:
        calls = _hist.delta(first["calls"], last["calls"])
        errors = _hist.delta(first["errors"], last["errors"])
        total, failed = sum(calls), sum(errors)
        values: dict[str, float] = {
            "syscall.count": float(total),
            "syscall.per_sec": total / max(seconds, 1e-9),
            "syscall.errors": float(failed),
        }
        why: dict[str, str] = {}
        if total:
            values["syscall.error_pct"] = 100.0 * failed / total
        samples = _latency("syscall.", _hist.delta(first["hist"], last["hist"]), values)
        values["syscall.latency_samples"] = float(samples)
        if not samples:
            why["syscall.p99_ns"] = why["syscall.p50_ns"] = "no syscall was timed in the window"
        busiest = sorted(range(len(calls)), key=lambda nr: calls[nr], reverse=True)[:TOP]
        context = {
            "syscall.top": [
                {"name": _syscall_name(nr), "calls": calls[nr], "errors": errors[nr]}
                for nr in busiest
                if calls[nr]
            ]
        }
        return Window(values, context, why)


class SchedDelay(BccProgram):
    """Run-queue delay of one enqueue in 8 per CPU (wakeups and preemptions)."""

    name = "sched_delay"
    tracepoints = ("sched:sched_wakeup", "sched:sched_wakeup_new", "sched:sched_switch")
    signals = ("sched.delay_p99_ns", "sched.delay_p50_ns", "sched.delay_samples")
    default_sample_mask = 7

    def snapshot(self) -> dict[str, Any]:
        return {"hist": self.totals("hist"), "lost": sum(self.totals("lost"))}

    def events(self, snap: dict[str, Any]) -> int:
        return int(sum(snap["hist"]))

    def window(self, first: dict[str, Any], last: dict[str, Any], seconds: float) -> Window:
        values: dict[str, float] = {}
        samples = _latency("sched.delay_", _hist.delta(first["hist"], last["hist"]), values)
        values["sched.delay_samples"] = float(samples)
        why = {}
        if not samples:
            why["sched.delay_p99_ns"] = why["sched.delay_p50_ns"] = "no task was timed"
        return Window(values, {}, why)


class DiskIO(BccProgram):
    """Every block request: latency by direction, counts and bytes."""

    name = "disk_io"
    tracepoints = ("block:block_rq_issue", "block:block_rq_complete")
    signals = (
        "disk.requests",
        "disk.reads",
        "disk.writes",
        "disk.read_bytes",
        "disk.write_bytes",
        "disk.p99_ns",
        "disk.read_p99_ns",
        "disk.write_p99_ns",
    )

    def snapshot(self) -> dict[str, Any]:
        return {
            "read": self.totals("read_hist"),
            "write": self.totals("write_hist"),
            "stats": self.totals("stats"),
            "lost": sum(self.totals("lost")),
        }

    def events(self, snap: dict[str, Any]) -> int:
        reads, writes, _, _, other = snap["stats"]
        return int(reads + writes + other)

    def window(self, first: dict[str, Any], last: dict[str, Any], seconds: float) -> Window:
        stats = _hist.delta(first["stats"], last["stats"])
        reads, writes, read_bytes, write_bytes, other = stats
        values: dict[str, float] = {
            "disk.requests": float(reads + writes + other),
            "disk.reads": float(reads),
            "disk.writes": float(writes),
            "disk.read_bytes": float(read_bytes),
            "disk.write_bytes": float(write_bytes),
        }
        read = _hist.delta(first["read"], last["read"])
        write = _hist.delta(first["write"], last["write"])
        _latency("disk.read_", read, values)
        _latency("disk.write_", write, values)
        _latency("disk.", [a + b for a, b in zip(read, write, strict=True)], values)
        for name in ("disk.p50_ns", "disk.read_p50_ns", "disk.write_p50_ns"):
            values.pop(name, None)
        why = {
            name: "no block request completed in the window"
            for name in ("disk.p99_ns", "disk.read_p99_ns", "disk.write_p99_ns")
            if name not in values
        }
        return Window(values, {}, why)


class FdTrack(BccProgram):
    """Successful openat and close calls per process."""

    name = "fd_track"
    tracepoints = ("syscalls:sys_exit_openat", "syscalls:sys_exit_close")
    signals = (
        "fd.opens",
        "fd.closes",
        "fd.opens_per_sec",
        "fd.closes_per_sec",
        "fd.process_growth_per_sec",
    )

    def __init__(self, text: str | None = None, source_dir: Path | None = None) -> None:
        super().__init__(text, source_dir)
        #: Opens and closes of processes that exited and were dropped from the map.
        self._retired = 0
        self._prune_lock = threading.Lock()

    def _read(self) -> tuple[dict[int, tuple[int, int, str, str]], list[Any]]:
        """tgid -> (opens, closes, the name at its first event, its name now); exited keys."""
        procs: dict[int, tuple[int, int, str, str]] = {}
        gone = []
        for key, value in self.bpf[b"procs"].items():
            tgid = int(key.value)
            first = bytes(value.comm).split(b"\0", 1)[0].decode("utf-8", "replace") or "?"
            # The kernel keeps the name of the first event, often the parent's between
            # fork and exec (the child closes fds before it execs): name it as it is now.
            try:
                now = Path(f"/proc/{tgid}/comm").read_text("utf-8", "replace").strip() or first
            except OSError:
                now = first
                gone.append(key)
            procs[tgid] = (int(value.opens), int(value.closes), first, now)
        return procs, gone

    def snapshot(self) -> dict[str, Any]:
        procs, gone = self._read()
        # This snapshot still lists the exited processes (a window ending here counts
        # them); the next one finds their totals in `retired` instead.
        with self._prune_lock:
            retired = self._retired
            table = self.bpf[b"procs"]
            for key in gone:  # the map is bounded: exited processes make room
                try:
                    del table[key]
                except KeyError:
                    continue  # another snapshot retired it
                opens, closes, _, _ = procs[int(key.value)]
                self._retired += opens + closes
        return {"procs": procs, "lost": sum(self.totals("lost")), "retired": retired}

    def stats(self) -> BPFStats:
        # Read only: metrics collection calls this from its own thread, mid-window; a
        # prune here would retire a process before the window's end had counted it.
        if self.bpf is None:
            return BPFStats(0, 0)
        procs, _ = self._read()
        with self._prune_lock:
            retired = self._retired
        return BPFStats(
            int(retired + sum(o + c for o, c, _, _ in procs.values())), sum(self.totals("lost"))
        )

    def events(self, snap: dict[str, Any]) -> int:
        return int(snap["retired"] + sum(o + c for o, c, _, _ in snap["procs"].values()))

    def window(self, first: dict[str, Any], last: dict[str, Any], seconds: float) -> Window:
        seconds = max(seconds, 1e-9)
        before: dict[int, tuple[int, int, str, str]] = first["procs"]
        opens = closes = 0
        growth: list[tuple[float, str, int, int]] = []
        for tgid, (o, c, kept, comm) in last["procs"].items():
            o0, c0, kept0, _ = before.get(tgid, (0, 0, kept, comm))
            if kept0 != kept:  # the tgid was reused by another program
                o0 = c0 = 0
            d_open, d_close = max(o - o0, 0), max(c - c0, 0)
            opens, closes = opens + d_open, closes + d_close
            if d_open or d_close:
                growth.append(((d_open - d_close) / seconds, comm, d_open, d_close))
        values: dict[str, float] = {
            "fd.opens": float(opens),
            "fd.closes": float(closes),
            "fd.opens_per_sec": opens / seconds,
            "fd.closes_per_sec": closes / seconds,
        }
        context: dict[str, Any] = {}
        why = {}
        if growth:
            growth.sort(key=lambda g: g[0], reverse=True)
            values["fd.process_growth_per_sec"] = max(growth[0][0], 0.0)
            context["fd.process_top"] = [
                {"name": comm, "growth_per_sec": round(rate, 2), "opens": o, "closes": c}
                for rate, comm, o, c in growth[:TOP]
            ]
        else:
            why["fd.process_growth_per_sec"] = "no process opened or closed a file"
        return Window(values, context, why)


class TcpMonitor(BccProgram):
    """TCP retransmits, connects, accepts and closes."""

    name = "tcp_monitor"
    tracepoints = ("tcp:tcp_retransmit_skb", "sock:inet_sock_set_state")
    signals = ("tcp.retransmits", "tcp.connects", "tcp.accepts", "tcp.closes", "tcp.rtt_p99_ns")
    _KEYS: Final = ("tcp.retransmits", "tcp.connects", "tcp.accepts", "tcp.closes")

    def snapshot(self) -> dict[str, Any]:
        return {"counts": self.totals("counts"), "lost": 0}

    def events(self, snap: dict[str, Any]) -> int:
        return int(sum(snap["counts"]))

    def window(self, first: dict[str, Any], last: dict[str, Any], seconds: float) -> Window:
        counts = _hist.delta(first["counts"], last["counts"])
        values = {k: float(v) for k, v in zip(self._KEYS, counts, strict=True)}
        why = {"tcp.rtt_p99_ns": "tcp_monitor's tracepoints carry no round-trip time"}
        return Window(values, {}, why)


class OomTrack(BccProgram):
    """OOM kills; each victim's command name (never its pid) from a perf buffer."""

    name = "oom_track"
    tracepoints = ("oom:mark_victim",)
    signals = ("oom.kills",)
    #: Victim names kept for windows to quote.
    VICTIMS: Final = 64

    def __init__(self, text: str | None = None, source_dir: Path | None = None) -> None:
        super().__init__(text, source_dir)
        self._victims: deque[tuple[int, str]] = deque(maxlen=self.VICTIMS)
        self._seen = 0
        self._lost = 0
        self._stop = threading.Event()
        self._poller: threading.Thread | None = None

    def started(self) -> None:
        self._stop.clear()
        self.bpf[b"victims"].open_perf_buffer(self._victim, page_cnt=8, lost_cb=self._lost_cb)
        # Polled at once, so a victim's name is read while it is still dying.
        self._poller = threading.Thread(target=self._poll, name="kerno-bpf-oom", daemon=True)
        self._poller.start()

    def _poll(self) -> None:
        while not self._stop.is_set():
            bpf = self.bpf
            if bpf is None:
                return
            with contextlib.suppress(Exception):
                bpf.perf_buffer_poll(timeout=200)

    def _victim(self, cpu: int, data: Any, size: int) -> None:
        class Event(ctypes.Structure):
            _fields_ = [("pid", ctypes.c_uint32)]

        pid = ctypes.cast(data, ctypes.POINTER(Event)).contents.pid
        try:
            name = Path(f"/proc/{pid}/comm").read_text(encoding="utf-8").strip() or "?"
        except OSError:
            name = "?"  # already gone
        self._seen += 1
        self._victims.append((self._seen, name))

    def _lost_cb(self, count: int) -> None:
        self._lost += count

    def close(self) -> None:
        self._stop.set()
        poller, self._poller = self._poller, None
        if poller is not None:
            poller.join(1.0)
        super().close()

    def snapshot(self) -> dict[str, Any]:
        return {"kills": sum(self.totals("kills")), "seen": self._seen, "lost": self._lost}

    def events(self, snap: dict[str, Any]) -> int:
        return int(snap["kills"])

    def window(self, first: dict[str, Any], last: dict[str, Any], seconds: float) -> Window:
        kills = max(last["kills"] - first["kills"], 0)
        victims = [n for i, n in list(self._victims) if first["seen"] < i <= last["seen"]]
        context = {"mem.oom_victims": victims} if victims else {}
        return Window({"oom.kills": float(kills)}, context, {})


#: Every program, by name, in the order they load.
PROGRAM_TYPES: Final[tuple[type[BccProgram], ...]] = (
    SyscallLatency,
    TcpMonitor,
    DiskIO,
    SchedDelay,
    FdTrack,
    OomTrack,
)
