"""Can this host load bcc programs, where are their C sources, and what did the compiler say."""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Final

#: Capability bits (linux/capability.h): either CAP_SYS_ADMIN, or CAP_BPF with CAP_PERFMON.
CAP_SYS_ADMIN: Final = 21
CAP_PERFMON: Final = 38
CAP_BPF: Final = 39
#: Where bcc looks for tracefs, in its order.
TRACEFS: Final = ("/sys/kernel/debug/tracing", "/sys/kernel/tracing")
#: What a compile error line looks like in clang's output.
_COMPILE_ERROR = re.compile(r"error: .*")
#: Lines another thread of ours may write to fd 2 during a compile: said again after it.
_OURS: Final = ("kerno-otel", '{"')


def c_source_dir() -> Path:
    """The directory with the programs' C text: in the wheel beside this module, else the repo's."""
    here = Path(__file__).resolve().parent
    packaged = here / "c"
    if (packaged / "kerno.h").is_file():
        return packaged
    return here.parent.parent.parent / "bpf"


def _effective_caps(status: str) -> int:
    for line in status.splitlines():
        if line.startswith("CapEff:"):
            return int(line.split()[1], 16)
    return 0


def unavailable(
    proc_status: str | None = None, release: str | None = None, root: str = "/"
) -> str | None:
    """Why this host cannot load bcc programs (a few words and the fix), or None when it can.

    Checked in the order a user fixes them: privilege, tracefs, bcc, kernel headers.
    """
    if proc_status is None:
        try:
            proc_status = Path("/proc/self/status").read_text(encoding="utf-8")
        except OSError:
            proc_status = ""
    caps = _effective_caps(proc_status)
    if not (caps >> CAP_SYS_ADMIN & 1 or (caps >> CAP_BPF & 1 and caps >> CAP_PERFMON & 1)):
        return "not root: loading BPF needs CAP_BPF and CAP_PERFMON (or CAP_SYS_ADMIN)"
    base = Path(root)
    if not any((base / t.lstrip("/") / "events").is_dir() for t in TRACEFS):
        return "tracefs not mounted at /sys/kernel/tracing (scripts/setup-bpf.sh mounts it)"
    try:
        import bcc  # noqa: F401
    except Exception:
        return "bcc missing (Debian's python3-bpfcc; scripts/setup-bpf.sh installs it)"
    release = release or os.uname().release
    build = base / "lib" / "modules" / release / "build"
    kheaders = base / "sys" / "kernel" / "kheaders.tar.xz"
    if not (build / "include").is_dir() and not kheaders.exists():
        return (
            f"no kernel headers at /lib/modules/{release}/build "
            "(scripts/setup-bpf.sh installs and links them)"
        )
    return None


@contextlib.contextmanager
def captured_stderr() -> Iterator[list[str]]:
    """Everything written to file descriptor 2 inside the block (bcc's compiler writes there).

    The list handed out is filled when the block ends. Process-wide for a
    moment (a program compiles in about 0.3 s, at start-up): lines of our own
    (``kerno-otel: …``) and records echoed by ``audit.stderr`` (``{"…``) that
    another thread wrote meanwhile are written out again; the compiler's own
    output is not (``compile_error`` keeps one line).
    """
    out: list[str] = []
    with tempfile.TemporaryFile() as sink:
        saved = os.dup(2)
        try:
            os.dup2(sink.fileno(), 2)
            yield out
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            out.extend(sink.read().decode("utf-8", "replace").splitlines())
            ours = "".join(f"{line}\n" for line in out if line.startswith(_OURS))
            if ours:
                with contextlib.suppress(OSError):
                    os.write(2, ours.encode())


def compile_error(lines: list[str], exc: BaseException) -> str:
    """The first ``error:`` the compiler printed, else the exception's first line."""
    for line in lines:
        found = _COMPILE_ERROR.search(line)
        if found:
            return f"compile failed: {found.group(0)}"
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return text
