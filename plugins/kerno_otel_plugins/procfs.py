"""The procfs source plugin: load, PSI, memory, cgroup v2, fds, TCP and disk from /proc.

Works without root: what it cannot read (other users' fd tables, a missing
``/proc/pressure``, a cgroup v1 host) is skipped or listed as absent. A
:class:`Snapshot` is a pure read of a tree of files, and :func:`derive` turns
two snapshots into :class:`~kerno_otel.findings.Signals`, so tests point both
at recorded fixture trees (``tests/fixtures/procfs/<case>/{start,end}``).
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from kerno_otel import Config, SourceFactory, hookimpl
from kerno_otel.findings import Signals

#: Stable plugin name (the entry point's name) and the source's name.
NAME: Final = "procfs"
#: How many processes ``fd.top`` keeps (by fd growth).
TOP_PROCESSES: Final = 5

#: Whole disks only: partitions, loop and ram devices would double-count or mean nothing.
_PARTITION = re.compile(r"^(?:[shv]d[a-z]+\d+|nvme\d+n\d+p\d+|mmcblk\d+p\d+|xvd[a-z]+\d+)$")
_VIRTUAL = ("loop", "ram", "zram", "fd", "sr")
_PSI_RESOURCES: Final = ("cpu", "memory", "io")

#: What this source can ever measure; whatever a snapshot lacks is reported absent.
SIGNALS: Final = (
    "load.1m",
    "load.5m",
    "load.15m",
    "cpu.count",
    "mem.used_pct",
    "mem.oom_kills",
    "cgroup.memory.used_pct",
    "cgroup.memory.high_events",
    "cgroup.memory.oom_kills",
    "fd.open_total",
    "fd.growth_per_sec",
    "tcp.retransmit_pct",
    "tcp.out_segs",
    "disk.await_ns",
    "disk.write_await_ns",
    "disk.util_pct",
    "disk.write_bytes_per_sec",
    *(f"psi.{r}.{k}_avg10" for r in _PSI_RESOURCES for k in ("some", "full")),
    *(f"psi.{r}.{k}_pct" for r in _PSI_RESOURCES for k in ("some", "full")),
)


def _read(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None


@dataclass
class Snapshot:
    """The counters of one moment, as parsed from a /proc tree (and its cgroup fs)."""

    load: tuple[float, float, float] | None = None
    cpus: int | None = None
    meminfo: dict[str, int] = field(default_factory=dict)
    oom_kills: int | None = None
    psi: dict[str, dict[str, tuple[float, int]]] = field(default_factory=dict)
    tcp: dict[str, int] = field(default_factory=dict)
    disks: dict[str, tuple[int, ...]] = field(default_factory=dict)
    #: pid -> (command name, open fds), for the processes whose fd table was readable.
    fds: dict[int, tuple[str, int]] = field(default_factory=dict)
    cgroup_path: str | None = None
    cgroup: dict[str, int | None] = field(default_factory=dict)
    cgroup_events: dict[str, int] = field(default_factory=dict)


def snapshot(proc: Path | str = "/proc", cgroup_root: Path | str = "/sys/fs/cgroup") -> Snapshot:
    """Read everything this source uses from ``proc`` and ``cgroup_root``; never raises."""
    proc, cgroup_root = Path(proc), Path(cgroup_root)
    snap = Snapshot()
    text = _read(proc / "loadavg")
    if text:
        parts = text.split()
        with contextlib.suppress(IndexError, ValueError):
            snap.load = (float(parts[0]), float(parts[1]), float(parts[2]))
    text = _read(proc / "stat")
    if text:
        cpus = sum(1 for line in text.splitlines() if re.match(r"^cpu\d+\s", line))
        snap.cpus = cpus or None
    for line in (_read(proc / "meminfo") or "").splitlines():
        key, _, rest = line.partition(":")
        fields = rest.split()
        if fields and fields[0].isdigit():
            snap.meminfo[key.strip()] = int(fields[0])
    for line in (_read(proc / "vmstat") or "").splitlines():
        key, _, value = line.partition(" ")
        if key == "oom_kill" and value.strip().isdigit():
            snap.oom_kills = int(value)
    for resource in _PSI_RESOURCES:
        text = _read(proc / "pressure" / resource)
        if text is None:
            continue
        kinds: dict[str, tuple[float, int]] = {}
        for line in text.splitlines():
            if not line.strip():
                continue
            kind, *pairs = line.split()
            values = dict(p.split("=", 1) for p in pairs if "=" in p)
            try:
                kinds[kind] = (float(values["avg10"]), int(values["total"]))
            except (KeyError, ValueError):
                continue
        snap.psi[resource] = kinds
    snap.tcp = _snmp_tcp(_read(proc / "net" / "snmp") or "")
    for line in (_read(proc / "diskstats") or "").splitlines():
        parts = line.split()
        if len(parts) < 14:
            continue
        name = parts[2]
        if name.startswith(_VIRTUAL) or _PARTITION.match(name):
            continue
        try:
            snap.disks[name] = tuple(int(v) for v in parts[3:14])
        except ValueError:
            continue
    snap.fds = _fd_counts(proc)
    _cgroup(snap, proc, cgroup_root)
    return snap


def _snmp_tcp(text: str) -> dict[str, int]:
    lines = [line.split() for line in text.splitlines() if line.startswith("Tcp:")]
    if len(lines) < 2:
        return {}
    out: dict[str, int] = {}
    for key, value in zip(lines[0][1:], lines[1][1:], strict=False):
        try:
            out[key] = int(value)
        except ValueError:
            continue
    return out


def _fd_counts(proc: Path) -> dict[int, tuple[str, int]]:
    out: dict[int, tuple[str, int]] = {}
    try:
        entries = os.listdir(proc)
    except OSError:
        return out
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            count = len(os.listdir(proc / entry / "fd"))
        except OSError:  # not ours (no root), or gone
            continue
        name = (_read(proc / entry / "comm") or "?").strip() or "?"
        out[int(entry)] = (name, count)
    return out


def _cgroup(snap: Snapshot, proc: Path, root: Path) -> None:
    for line in (_read(proc / "self" / "cgroup") or "").splitlines():
        if line.startswith("0::"):
            snap.cgroup_path = line[3:].strip() or "/"
    if snap.cgroup_path is None:
        return
    where = root / snap.cgroup_path.lstrip("/")
    current = _read(where / "memory.current")
    if current is None:
        return  # cgroup v1, or the memory controller is not enabled here
    snap.cgroup["current"] = int(current.strip()) if current.strip().isdigit() else None
    limit = (_read(where / "memory.max") or "max").strip()
    snap.cgroup["max"] = int(limit) if limit.isdigit() else None
    for line in (_read(where / "memory.events") or "").splitlines():
        key, _, value = line.partition(" ")
        if value.strip().isdigit():
            snap.cgroup_events[key] = int(value)


def derive(first: Snapshot, last: Snapshot, window_s: float) -> Signals:
    """The signals of a window from its first and last snapshots."""
    values: dict[str, float] = {}
    context: dict[str, Any] = {}
    window = max(window_s, 1e-9)
    if last.load is not None:
        values["load.1m"], values["load.5m"], values["load.15m"] = last.load
    if last.cpus is not None:
        values["cpu.count"] = float(last.cpus)
    total = last.meminfo.get("MemTotal")
    available = last.meminfo.get("MemAvailable")
    if total and available is not None:
        values["mem.used_pct"] = 100.0 * (1.0 - available / total)
    if first.oom_kills is not None and last.oom_kills is not None:
        values["mem.oom_kills"] = float(max(last.oom_kills - first.oom_kills, 0))
    for resource, kinds in last.psi.items():
        for kind, (avg10, stall_us) in kinds.items():
            values[f"psi.{resource}.{kind}_avg10"] = avg10
            before = first.psi.get(resource, {}).get(kind)
            if before is not None:
                share = (stall_us - before[1]) / (window * 1e6) * 100.0
                values[f"psi.{resource}.{kind}_pct"] = min(max(share, 0.0), 100.0)
    _tcp(first.tcp, last.tcp, values)
    _disks(first.disks, last.disks, window, values, context)
    _fds(first.fds, last.fds, window, values, context)
    if last.cgroup_path is not None and "current" in last.cgroup:
        context["cgroup.path"] = last.cgroup_path
        current, limit = last.cgroup.get("current"), last.cgroup.get("max")
        if current is not None and limit:
            values["cgroup.memory.used_pct"] = 100.0 * current / limit
        for key, name in (("high", "high_events"), ("oom_kill", "oom_kills")):
            if key in last.cgroup_events and key in first.cgroup_events:
                delta = last.cgroup_events[key] - first.cgroup_events[key]
                values[f"cgroup.memory.{name}"] = float(max(delta, 0))
    absent = frozenset(name for name in SIGNALS if name not in values)
    return Signals(window_s, values, absent, context)


def _tcp(first: Mapping[str, int], last: Mapping[str, int], values: dict[str, float]) -> None:
    keys = ("OutSegs", "RetransSegs")
    if not all(k in first and k in last for k in keys):
        return
    sent = last["OutSegs"] - first["OutSegs"]
    retrans = last["RetransSegs"] - first["RetransSegs"]
    values["tcp.out_segs"] = float(max(sent, 0))
    values["tcp.retransmit_pct"] = 100.0 * retrans / sent if sent > 0 else 0.0


def _disks(
    first: Mapping[str, tuple[int, ...]],
    last: Mapping[str, tuple[int, ...]],
    window: float,
    values: dict[str, float],
    context: dict[str, Any],
) -> None:
    # diskstats fields from index 0: reads, reads merged, sectors read, ms reading,
    # writes, writes merged, sectors written, ms writing, in flight, ms doing I/O, weighted ms.
    worst: tuple[float, str] | None = None
    for name, now in last.items():
        then = first.get(name)
        if then is None:
            continue
        d = [b - a for a, b in zip(then, now, strict=False)]
        ios = d[0] + d[4]
        util = 100.0 * d[9] / (window * 1000.0)
        values["disk.util_pct"] = max(values.get("disk.util_pct", 0.0), min(util, 100.0))
        rate = d[6] * 512 / window
        values["disk.write_bytes_per_sec"] = values.get("disk.write_bytes_per_sec", 0.0) + rate
        if ios > 0:
            wait_ns = (d[3] + d[7]) / ios * 1e6
            if worst is None or wait_ns > worst[0]:
                worst = (wait_ns, name)
            values["disk.await_ns"] = max(values.get("disk.await_ns", 0.0), wait_ns)
        if d[4] > 0:
            write_ns = d[7] / d[4] * 1e6
            values["disk.write_await_ns"] = max(values.get("disk.write_await_ns", 0.0), write_ns)
    if worst is not None:
        context["disk.device"] = worst[1]


def _fds(
    first: Mapping[int, tuple[str, int]],
    last: Mapping[int, tuple[str, int]],
    window: float,
    values: dict[str, float],
    context: dict[str, Any],
) -> None:
    if not last:
        return
    values["fd.open_total"] = float(sum(count for _, count in last.values()))
    growth: list[tuple[float, int, str, int]] = []
    for pid, (name, count) in last.items():
        before = first.get(pid)
        if before is not None and before[0] == name:
            growth.append(((count - before[1]) / window, pid, name, count))
    if not growth:
        return
    growth.sort(key=lambda item: item[0], reverse=True)
    values["fd.growth_per_sec"] = max(growth[0][0], 0.0)
    context["fd.top"] = [
        {"name": name, "pid": pid, "fds": count, "growth_per_sec": round(rate, 2)}
        for rate, pid, name, count in growth[:TOP_PROCESSES]
    ]


class ProcfsSource:
    """The doctor source: a snapshot at the start of the window, another at its end."""

    def __init__(
        self, proc: Path | str = "/proc", cgroup_root: Path | str = "/sys/fs/cgroup"
    ) -> None:
        self.proc = Path(proc)
        self.cgroup_root = Path(cgroup_root)

    def begin(self) -> Snapshot:
        return snapshot(self.proc, self.cgroup_root)

    def end(self, begun: Snapshot, window_s: float) -> Signals:
        return derive(begun, snapshot(self.proc, self.cgroup_root), window_s)


def _factory(config: Config) -> ProcfsSource | None:
    section = config.section(NAME)
    proc = str(section.get("proc", "/proc"))
    if not Path(proc).is_dir():
        return None
    return ProcfsSource(proc, str(section.get("cgroup_root", "/sys/fs/cgroup")))


@hookimpl
def register_sources(register: Callable[[str, SourceFactory], None]) -> None:
    register(NAME, _factory)
