"""plugins/kerno_otel_plugins/bpf/_host.py: why a host cannot load BPF, and compiler errors."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from kerno_otel_plugins.bpf._host import captured_stderr, compile_error, unavailable

ROOT_CAPS = "CapEff:\t000001ffffffffff\n"
#: CAP_BPF and CAP_PERFMON only (bits 39 and 38).
BPF_CAPS = f"CapEff:\t{(1 << 39) | (1 << 38):016x}\n"


def has_bcc() -> bool:
    try:
        import bcc  # noqa: F401
    except Exception:
        return False
    return True


def test_no_capability_is_not_root(tmp_path: Path) -> None:
    assert unavailable("CapEff:\t0000000000000000\n", root=str(tmp_path)) == (
        "not root: loading BPF needs CAP_BPF and CAP_PERFMON (or CAP_SYS_ADMIN)"
    )
    assert unavailable(f"CapEff:\t{1 << 39:016x}\n", root=str(tmp_path)).startswith("not root")


def test_tracefs_is_checked_next(tmp_path: Path) -> None:
    for caps in (ROOT_CAPS, BPF_CAPS):
        assert unavailable(caps, root=str(tmp_path)) == (
            "tracefs not mounted at /sys/kernel/tracing (scripts/setup-bpf.sh mounts it)"
        )


def test_then_bcc_then_headers(tmp_path: Path) -> None:
    (tmp_path / "sys" / "kernel" / "tracing" / "events").mkdir(parents=True)
    reason = unavailable(ROOT_CAPS, release="6.18.0-test", root=str(tmp_path))
    if not has_bcc():
        assert reason == "bcc missing (Debian's python3-bpfcc; scripts/setup-bpf.sh installs it)"
        return
    assert reason == (
        "no kernel headers at /lib/modules/6.18.0-test/build "
        "(scripts/setup-bpf.sh installs and links them)"
    )
    (tmp_path / "lib" / "modules" / "6.18.0-test" / "build" / "include").mkdir(parents=True)
    assert unavailable(ROOT_CAPS, release="6.18.0-test", root=str(tmp_path)) is None


def test_compiler_output_becomes_its_first_error() -> None:
    printed = [
        "In file included from <built-in>:2:",
        "/virtual/main.c:40:10: fatal error: '/root/x.h' file not found",
        "1 error generated.",
    ]
    assert compile_error(printed, Exception("Failed to compile BPF module <text>")) == (
        "compile failed: error: '/root/x.h' file not found"
    )
    assert compile_error([], Exception("Failed to attach\nmore")) == "Failed to attach"


def test_captured_stderr_takes_file_descriptor_2(capfd: pytest.CaptureFixture[str]) -> None:
    with captured_stderr() as printed:
        os.write(2, b"error: from C\nkerno-otel: audit: from another thread\n")
    assert printed == ["error: from C", "kerno-otel: audit: from another thread"]
    # Our own lines are not swallowed by a compile: they are written out again.
    assert capfd.readouterr().err == "kerno-otel: audit: from another thread\n"


def test_an_echoed_record_is_not_swallowed_by_a_compile(capfd: pytest.CaptureFixture[str]) -> None:
    # audit.stderr with the thread pipeline: the writer thread echoes records on fd 2,
    # and a program compiles (0.3 s) while the previous one's bpf.load is written.
    record = '{"v":1,"type":"bpf.load","details":{"program":"a"}}'
    with captured_stderr():
        os.write(2, f"/virtual/main.c:3:1: error: nope\n{record}\n".encode())
    assert capfd.readouterr().err == f"{record}\n"


@pytest.mark.parametrize("status", ["", "Name:\tx\n"])
def test_unreadable_status_means_no_capability(status: str, tmp_path: Path) -> None:
    assert str(unavailable(status, root=str(tmp_path))).startswith("not root")
