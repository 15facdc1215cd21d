"""The doctor plugin's cycle thread: a cycle that raises is one scrubbed stderr line, never a panic.

A real CycleThread on a real AuditLog and config; the failing piece is a plugin's sink
factory (build_doctor lets it raise), whose exception may quote a secret or refuse str().
"""

from __future__ import annotations

import io
import threading
from pathlib import Path
from typing import Any

import pytest
from helpers import QUIET_THRESHOLDS, wait_until
from kerno_otel_plugins.doctor import CycleThread

from kerno_otel import AuditConfig, AuditLog, Config, load_config
from kerno_otel.hookspecs import DaemonContext

TOKEN = "ghp_" + "a1B2c3D4e5" * 4


class Unprintable(Exception):
    def __str__(self) -> str:
        raise RuntimeError("no text for you")


def _context(tmp_path: Path, log: AuditLog, exc: Exception) -> DaemonContext:
    config_file = tmp_path / "kerno.yaml"
    config_file.write_text(
        f"audit:\n  file_path: {log.config.file_path}\n"
        "doctor:\n  duration: 1s\n  interval: 1s\n  sinks: [boom]\n  thresholds:\n"
        + QUIET_THRESHOLDS
    )

    def boom(config: Config) -> Any:
        raise exc

    return DaemonContext(
        audit=log,
        config=load_config(str(config_file), {}),
        request_stop=lambda reason: None,
        sinks={"boom": boom},
    )


@pytest.mark.parametrize(
    ("exc", "said"),
    [
        (Unprintable(), "Unprintable: <str() failed>"),
        (ValueError(f"cannot log in with token {TOKEN}"), "ValueError: cannot log in with token "),
    ],
)
def test_a_sink_factory_raising_is_a_scrubbed_line_and_the_thread_goes_on(
    tmp_path: Path, exc: Exception, said: str
) -> None:
    escaped: list[threading.ExceptHookArgs] = []
    old_hook = threading.excepthook
    threading.excepthook = escaped.append  # what the daemon turns into a panic
    err = io.StringIO()
    try:
        with AuditLog(AuditConfig(file_path=str(tmp_path / "kerno-audit.jsonl"))) as log:
            thread = CycleThread(_context(tmp_path, log, exc), err)
            thread.start()
            try:
                assert wait_until(lambda: "cycle failed" in err.getvalue(), 30)
                # Alive after it (it waits to try again), and nothing escaped the thread.
                assert thread._thread.is_alive()
            finally:
                thread.stop()
    finally:
        threading.excepthook = old_hook
    assert escaped == []
    lines = [line for line in err.getvalue().splitlines() if "cycle failed" in line]
    assert lines[0].startswith(f"kerno-otel: doctor: cycle failed: {said}")
    assert TOKEN not in err.getvalue()
