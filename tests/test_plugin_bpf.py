"""The bpf plugin against the real kernel: each program's maps decoded for a known workload.

Runs as root after scripts/setup-bpf.sh (CI does both); skips elsewhere with the
reason. The six programs load once for the module (about 2 s of compiling) and
each test narrows them to its own child process, device or port.
"""

from __future__ import annotations

import io
import os
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from bpf_workloads import BPF_UNAVAILABLE, SKIP_REASON, child
from helpers import stream_records, wait_until
from kerno_otel_plugins.bpf import PROGRAMS, BccProgram, BPFSource, Scope, _hist
from kerno_otel_plugins.bpf._programs import SyscallLatency

from kerno_otel import AuditConfig, AuditLog, Config
from kerno_otel.bpf.loader import BPFLoader
from kerno_otel.records.schema import SchemaSet
from kerno_otel.records.validate import RecordValidator

pytestmark = pytest.mark.skipif(BPF_UNAVAILABLE is not None, reason=SKIP_REASON)


@pytest.fixture(scope="module")
def programs() -> Iterator[dict[str, BccProgram]]:
    for program in PROGRAMS.values():
        program.load()
    yield PROGRAMS
    for program in PROGRAMS.values():
        program.close()


@pytest.fixture
def scoped(programs: dict[str, BccProgram]) -> Iterator[dict[str, BccProgram]]:
    """The programs; every scope a test sets is put back to the default after it."""
    yield programs
    for program in programs.values():
        if program.loaded:
            program.configure(Scope(sample_mask=program.default_sample_mask))


def _nr(name: str) -> int:
    from bcc.syscall import syscalls  # nr -> name

    return next(nr for nr, n in syscalls.items() if n == name.encode())


def test_fd_track_counts_a_childs_opens_and_closes(
    scoped: dict[str, BccProgram], tmp_path: Path
) -> None:
    program = scoped["fd_track"]
    target = tmp_path / "f"
    target.write_text("x")
    code = (
        f"p = {str(target)!r}\n"
        "go()\n"
        "for _ in range(37): os.close(os.open(p, os.O_RDONLY))\n"
        "kept = [os.open(p, os.O_RDONLY) for _ in range(5)]\n"
        "done()\n"
    )
    with child(code) as c:
        c.expect("ready")
        program.configure(Scope(tgid=c.pid))
        first = program.snapshot()
        c.send()
        c.expect("done")
        last = program.snapshot()
    window = program.window(first, last, 2.0)
    assert (window.values["fd.opens"], window.values["fd.closes"]) == (42.0, 37.0)
    assert window.values["fd.process_growth_per_sec"] == 2.5
    [top] = window.context["fd.process_top"]
    assert (top["opens"], top["closes"], top["growth_per_sec"]) == (42, 37, 2.5)
    assert top["name"].startswith("python")


def test_fd_track_names_a_process_as_it_is_now_not_as_at_its_first_event(
    scoped: dict[str, BccProgram], tmp_path: Path
) -> None:
    # A forked child closes fds under its parent's name before it execs; the kernel
    # keeps the name of the first event. A rename (prctl, as exec does) stands in.
    program = scoped["fd_track"]
    target = tmp_path / "f"
    target.write_text("x")
    code = (
        f"p = {str(target)!r}\n"
        "import ctypes\n"
        "go()\n"
        "kept = [os.open(p, os.O_RDONLY) for _ in range(3)]\n"
        "ctypes.CDLL(None).prctl(15, b'kerno-renamed', 0, 0, 0)\n"
        "done()\n"
    )
    with child(code) as c:
        c.expect("ready")
        program.configure(Scope(tgid=c.pid))
        first = program.snapshot()
        c.send()
        c.expect("done")
        last = program.snapshot()
    [top] = program.window(first, last, 1.0).context["fd.process_top"]
    assert (top["name"], top["opens"]) == ("kerno-renamed", 3)


def test_fd_track_stats_between_a_windows_ends_lose_nothing_of_it(
    scoped: dict[str, BccProgram], tmp_path: Path
) -> None:
    # stats() runs whenever metrics are collected (kerno.bpf.lost_events), from another
    # thread, in the middle of doctor windows: it must not retire a process that exited
    # in the window before the window's end has counted it.
    program = scoped["fd_track"]
    target = tmp_path / "f"
    target.write_text("x")
    code = (
        f"p = {str(target)!r}\n"
        "go()\n"
        "kept = [os.open(p, os.O_RDONLY) for _ in range(4)]\n"
        "os._exit(0)\n"
    )
    with child(code) as c:
        c.expect("ready")
        program.configure(Scope(tgid=c.pid))
        first = program.snapshot()
        c.send()
        assert c.proc.wait(10) == 0
        assert program.stats().events >= 4
        last = program.snapshot()
    assert program.window(first, last, 1.0).values["fd.opens"] == 4.0


def test_syscall_latency_times_a_sleeping_child_and_counts_its_errors(
    scoped: dict[str, BccProgram],
) -> None:
    program = scoped["syscall_latency"]
    code = (
        "go()\n"
        "for _ in range(20): time.sleep(0.005)\n"
        "for _ in range(30):\n"
        "    try: os.open('/nonexistent/kerno', os.O_RDONLY)\n"
        "    except OSError: pass\n"
        "done()\n"
    )
    with child(code) as c:
        c.expect("ready")
        program.configure(Scope(tgid=c.pid, sample_mask=0))
        first = program.snapshot()
        c.send()
        c.expect("done")
        last = program.snapshot()
    calls = _hist.delta(first["calls"], last["calls"])
    errors = _hist.delta(first["errors"], last["errors"])
    assert calls[_nr("clock_nanosleep")] == 20
    assert errors[_nr("openat")] == 30
    assert errors[_nr("clock_nanosleep")] == 0
    hist = _hist.delta(first["hist"], last["hist"])
    # Every call was timed (no sampling), and the 20 sleeps took at least 5 ms each.
    assert sum(hist) >= sum(calls) - 1  # the read the child was blocked in began unscoped
    at_least_5ms = sum(n for slot, n in enumerate(hist) if _hist.bounds(slot)[1] > 5_000_000)
    assert at_least_5ms >= 20
    window = program.window(first, last, 1.0)
    assert window.values["syscall.errors"] >= 30
    assert window.values["syscall.p99_ns"] >= 4_000_000  # in the 5 ms slot or above


def test_sched_delay_times_each_wakeup_of_a_sleeping_child(
    scoped: dict[str, BccProgram],
) -> None:
    program = scoped["sched_delay"]
    code = "go()\nfor _ in range(20): time.sleep(0.002)\ndone()\n"
    with child(code) as c:
        c.expect("ready")
        program.configure(Scope(tgid=c.pid, sample_mask=0))
        first = program.snapshot()
        c.send()
        c.expect("done")
        last = program.snapshot()
    hist = _hist.delta(first["hist"], last["hist"])
    # One run-queue wait per wakeup from each sleep, plus the pipe wakeup and preemptions.
    assert 20 <= sum(hist) <= 80
    window = program.window(first, last, 1.0)
    assert 0 < window.values["sched.delay_p99_ns"] < 1e9
    assert window.values["sched.delay_samples"] == sum(hist)


@pytest.fixture
def loop_device(tmp_path: Path) -> Iterator[str]:
    backing = tmp_path / "disk.img"
    with backing.open("wb") as f:
        f.truncate(16 << 20)
    try:
        device = subprocess.run(
            ["losetup", "--find", "--show", str(backing)],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError) as exc:
        pytest.skip(f"no loop device to drive block I/O on: {exc}")
    try:
        yield device
    finally:
        subprocess.run(["losetup", "-d", device], check=False)


def test_disk_io_counts_direct_writes_and_reads_on_a_loop_device(
    scoped: dict[str, BccProgram], loop_device: str
) -> None:
    import mmap

    program = scoped["disk_io"]
    rdev = os.stat(loop_device).st_rdev
    program.configure(Scope(dev=os.major(rdev) << 20 | os.minor(rdev)))
    block = mmap.mmap(-1, 64 << 10)  # page-aligned, as O_DIRECT wants
    block.write(b"k" * (64 << 10))
    first = program.snapshot()
    fd = os.open(loop_device, os.O_RDWR | os.O_DIRECT)
    try:
        for i in range(8):
            assert os.pwritev(fd, [block], i * (128 << 10)) == 64 << 10
        os.fsync(fd)
        for i in range(4):
            assert os.preadv(fd, [block], i * (128 << 10)) == 64 << 10
    finally:
        os.close(fd)
    last = program.snapshot()
    window = program.window(first, last, 1.0)
    values = window.values
    assert (values["disk.writes"], values["disk.write_bytes"]) == (8.0, 8 * 65536.0)
    assert (values["disk.reads"], values["disk.read_bytes"]) == (4.0, 4 * 65536.0)
    assert 0 < values["disk.write_p99_ns"] < 10e9
    assert 0 < values["disk.read_p99_ns"] < 10e9


def test_tcp_monitor_counts_a_loopback_connect_and_close(scoped: dict[str, BccProgram]) -> None:
    program = scoped["tcp_monitor"]
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    program.configure(Scope(port=port))
    first = program.snapshot()
    client = socket.create_connection(("127.0.0.1", port))
    server, _ = listener.accept()
    client.close()
    server.close()
    listener.close()

    def counts() -> dict[str, float]:
        return dict(program.window(first, program.snapshot(), 1.0).values)

    # The last ACK of the close handshake lands in softirq: wait for the third close.
    assert wait_until(lambda: counts()["tcp.closes"] >= 3, timeout=10)
    assert counts() == {
        "tcp.retransmits": 0.0,
        "tcp.connects": 1.0,
        "tcp.accepts": 1.0,
        "tcp.closes": 3.0,  # client, server side, listener
    }
    window = program.window(first, program.snapshot(), 1.0)
    assert "tcp.rtt_p99_ns" not in window.values
    assert window.why_absent == {
        "tcp.rtt_p99_ns": "tcp_monitor's tracepoints carry no round-trip time"
    }


@pytest.fixture
def memory_cgroup() -> Iterator[Path]:
    root = Path("/sys/fs/cgroup/memory")
    if not (root / "memory.limit_in_bytes").exists():
        pytest.skip("no cgroup v1 memory controller to make an OOM kill in")
    group = root / f"kerno-oom-test-{os.getpid()}"
    group.mkdir()
    try:
        (group / "memory.limit_in_bytes").write_text(str(32 << 20))
        yield group
    finally:
        wait_until(lambda: not (group / "tasks").read_text().strip(), timeout=10)
        group.rmdir()


def test_oom_track_sees_a_kill_and_names_the_victim(
    scoped: dict[str, BccProgram], memory_cgroup: Path
) -> None:
    program = scoped["oom_track"]
    first = program.snapshot()
    code = (
        f"open({str(memory_cgroup / 'tasks')!r}, 'w').write(str(os.getpid()))\n"
        "go()\n"
        "hog = bytearray(256 << 20)\n"
        "done()\n"
    )
    with child(code) as c:
        c.expect("ready")
        c.send()
        assert c.proc.wait(30) == -9  # SIGKILL from the OOM killer
    assert wait_until(lambda: program.snapshot()["seen"] > first["seen"], timeout=10)
    window = program.window(first, program.snapshot(), 1.0)
    assert window.values["oom.kills"] == 1.0
    assert window.context["mem.oom_victims"] in (["python3"], ["python"], ["python3.11"])


def test_a_broken_program_fails_alone_and_the_others_report(
    programs: dict[str, BccProgram], tmp_path: Path
) -> None:
    live = tmp_path / "kerno-audit.jsonl"
    log = AuditLog(AuditConfig(file_path=str(live)), stderr=io.StringIO())
    err = io.StringIO()
    broken = SyscallLatency(text='#include "/root/kerno-secret/missing.h"\n')
    chosen: dict[str, Any] = {**programs, "syscall_latency": broken}
    loader = BPFLoader(log, err)
    results = loader.load(chosen)
    # Not loader.close(): the module's programs stay loaded for the other tests.
    log.close()
    assert [(r.name, r.success) for r in results] == [
        ("syscall_latency", False),
        ("tcp_monitor", True),
        ("disk_io", True),
        ("sched_delay", True),
        ("fd_track", True),
        ("oom_track", True),
    ]
    records = [r for r in stream_records(live) if r["type"] == "bpf.load"]
    validator = RecordValidator(SchemaSet.builtin())
    assert [validator.check(r) for r in records] == [None] * 6
    failed = records[0]["details"]
    assert failed["success"] is False
    assert failed["error"].startswith("compile failed: error: '/root/")
    assert "kerno-secret" not in failed["error"] and "kerno-secret" not in err.getvalue()
    assert [r["details"]["success"] for r in records[1:]] == [True] * 5
    # The five others still read: each source gives a window with its signals.
    config = Config()
    for name in ("tcp_monitor", "disk_io", "sched_delay", "fd_track", "oom_track"):
        source = BPFSource(programs[name], config)
        signals = source.end(source.begin(), 0.5)
        assert set(signals.values) - {f"bpf.{name}.lost"}, name
        assert signals.values[f"bpf.{name}.lost"] == 0.0
    assert loader.stats()["sched_delay"] is not None
    # The broken program's source says why it has nothing.
    source = BPFSource(broken, Config())
    signals = source.end(source.begin(), 0.5)
    assert signals.values == {}
    assert signals.context["why.syscall.p99_ns"].startswith(
        "bpf.syscall_latency: not loaded: compile failed: error: "
    )
