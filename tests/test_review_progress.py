"""Progress bars of the long commands: on stderr when it is a terminal (a real pty here),
never with --silent, never when stderr is not a terminal (every other test: CliRunner)."""

from __future__ import annotations

import os
import pty
import select
import subprocess
import sys
import time

import pytest
from review_log import Built, build


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Built:
    root = tmp_path_factory.mktemp("progress")
    return build(root / "log", root / "keys")


def on_a_terminal(*args: str) -> tuple[int, bytes, bytes]:
    """Run kerno-otel with stderr on a pty: (exit status, stdout, what the terminal got)."""
    master, slave = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "kerno_otel", *args],
        stdout=subprocess.PIPE,
        stderr=slave,
        env={**os.environ, "TERM": "xterm", "COLUMNS": "100"},
    )
    os.close(slave)
    seen = b""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        ready, _, _ = select.select([master], [], [], 1)
        if not ready:
            if proc.poll() is not None:
                break
            continue
        try:
            chunk = os.read(master, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not chunk:
            break
        seen += chunk
    assert proc.stdout is not None
    out = proc.stdout.read()
    os.close(master)
    return proc.wait(timeout=30), out, seen


@pytest.mark.parametrize(
    ("command", "task"),
    [
        (["audit", "query", "--type", "ai.call", "--nl"], b"query"),
        (["audit", "report", "--json"], b"report"),
        (["audit", "verify"], b"verify"),
        (["audit", "validate"], b"kerno-audit"),
    ],
)
def test_progress_shows_on_a_terminal_and_not_with_silent(
    built: Built, command: list[str], task: bytes
) -> None:
    status, out, terminal = on_a_terminal(*command, str(built.directory))
    assert status == 0
    assert b"\x1b[?25l" in terminal and task in terminal  # rich drew (and cleared) a bar
    status, quiet_out, quiet = on_a_terminal(*command, "--silent", str(built.directory))
    assert status == 0 and quiet_out == out
    assert b"\x1b[?25l" not in quiet  # the bar hides the cursor while it draws
    assert b"\x1b[" not in quiet  # only the summary line, no drawing at all
