"""Workloads the BPF tests control: a child process that waits for "go", works, says "done".

The child prints "ready" once its interpreter has started (its own start-up
syscalls are over), so a test can narrow a program to the child's pid and take
its first snapshot before the measured work begins.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager

from kerno_otel_plugins.bpf._host import unavailable

#: Why the kernel tests cannot run here (None: they run for real).
BPF_UNAVAILABLE = unavailable()
SKIP_REASON = f"BPF cannot load on this host: {BPF_UNAVAILABLE}"


class Child:
    """A gated child process running ``code`` (which may use ``go()`` and ``done()``)."""

    PRELUDE = (
        "import os, sys, time\n"
        "def go():\n"
        "    sys.stdout.write('ready\\n'); sys.stdout.flush(); sys.stdin.readline()\n"
        "def done():\n"
        "    sys.stdout.write('done\\n'); sys.stdout.flush(); sys.stdin.readline()\n"
    )

    def __init__(self, code: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", self.PRELUDE + code],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self.pid = self.proc.pid

    def expect(self, word: str) -> None:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().strip()
        assert line == word, f"child said {line!r}, expected {word!r}"

    def send(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write("\n")
        self.proc.stdin.flush()

    def finish(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)


@contextmanager
def child(code: str) -> Iterator[Child]:
    running = Child(code)
    try:
        yield running
    finally:
        running.finish()
