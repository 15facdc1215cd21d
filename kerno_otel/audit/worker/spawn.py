"""Starting the audit worker (two children on private pipes, and their first word), and reaping it.

    parent ══> clean stage ══> seal stage ══> files
      ▲                          │
      └══════ answers ═══════════┘

Each stage is ``sys.executable -c`` with this package's root on ``sys.path``, an
environment without our own, OpenTelemetry's or secret-looking variables, and
stdin/stdout as its pipes. The parent sends ``INIT`` and waits for ``READY`` (or
the ``ERROR`` opening the log raised, re-raised here with its message). At the end
(a close, or the worker lost) :func:`reap` waits for both, killing one that hangs.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TextIO

from kerno_otel.audit.files import AuditFileError, write_all
from kerno_otel.audit.worker import protocol as wire
from kerno_otel.config import ConfigError

_PIPE_SIZE = 1 << 20
_ERRORS: dict[str, Callable[[str], Exception]] = {
    "AuditFileError": AuditFileError,
    "ConfigError": ConfigError,
    "ValueError": ValueError,
}
_SECRET_WORDS = ("TOKEN", "SECRET", "KEY", "PASSWORD", "PASSWD", "CREDENTIAL", "AUTH")


class WorkerError(RuntimeError):
    """The audit worker could not be started."""


def worker_environment() -> dict[str, str]:
    """This process's environment without what the worker has no use for and should not
    hold: our own and OpenTelemetry's settings (its configuration comes over the pipe)
    and anything named like a secret."""
    return {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("KERNO_", "OTEL_"))
        and not any(word in name.upper() for word in _SECRET_WORDS)
    }


def _start(stage: str, stdin: int, stdout: int, env: dict[str, str]) -> subprocess.Popen[bytes]:
    root = str(Path(__file__).resolve().parents[3])
    command = [
        sys.executable,
        "-c",
        f"import sys; sys.path.insert(0, {root!r}); "
        f"from kerno_otel.audit.worker.main import main; sys.exit(main({stage!r}))",
    ]
    return subprocess.Popen(command, stdin=stdin, stdout=stdout, env=env)


def start_worker(
    init: wire.Init, stderr: TextIO
) -> tuple[list[subprocess.Popen[bytes]], int, wire.FrameReader]:
    """Start both stages and wait until the log is open: (the clean stage and the seal
    stage, the descriptor to send frames on, a reader of the answers after ``READY``).

    Raises what opening the log raised in the worker (``AuditFileError``,
    ``ConfigError``, ``ValueError``) with its message, or :class:`WorkerError`.
    """
    to_clean_r, to_clean_w = os.pipe()
    to_seal_r, to_seal_w = os.pipe()
    answers_r, answers_w = os.pipe()
    for fd in (to_clean_w, to_seal_w):
        with contextlib.suppress(OSError):
            fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, _PIPE_SIZE)
    env = worker_environment()
    procs: list[subprocess.Popen[bytes]] = []
    try:
        procs.append(_start("seal", to_seal_r, answers_w, env))
        procs.insert(0, _start("clean", to_clean_r, to_seal_w, env))
    except OSError as exc:
        for fd in (to_clean_r, to_clean_w, to_seal_r, to_seal_w, answers_r, answers_w):
            os.close(fd)
        for proc in procs:
            proc.wait()
        message = f"cannot start the audit worker ({exc}); set audit.pipeline: thread"
        raise WorkerError(message) from None
    for fd in (to_clean_r, to_seal_r, to_seal_w, answers_w):
        os.close(fd)
    reader = wire.FrameReader(answers_r)
    first: tuple[bytes, bytes] | None = None
    with contextlib.suppress(BrokenPipeError):  # a stage that died at start: see below
        write_all(to_clean_w, init.frame())
    while (first := reader.next_frame()) is not None and first[0] == wire.STDERR:
        stderr.write(wire.value(first[1]))  # what opening said (a repaired tail)
    if first is not None and first[0] == wire.READY:
        return procs, to_clean_w, reader
    os.close(to_clean_w)  # the clean stage ends, and with it the seal stage
    statuses = [proc.wait() for proc in procs]
    os.close(answers_r)
    if first is not None and first[0] == wire.ERROR:
        error = wire.value(first[1])
        raise _ERRORS.get(error["kind"], WorkerError)(error["message"])
    raise WorkerError(
        f"the audit worker exited at start (status {statuses}); "
        "see its message above, or set audit.pipeline: thread"
    )


def reap(procs: list[subprocess.Popen[bytes]], stderr: TextIO | None = None) -> list[int]:
    """Wait up to 30 s for each of the worker's processes, killing one that does not stop
    (said on ``stderr`` when given); their exit statuses, in order."""
    statuses = []
    for proc in procs:
        try:
            statuses.append(proc.wait(timeout=30))
        except subprocess.TimeoutExpired:
            if stderr is not None:
                stderr.write("kerno-otel: audit: the audit worker did not stop; killed\n")
            proc.kill()
            statuses.append(proc.wait())
    return statuses
