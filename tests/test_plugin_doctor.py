"""The doctor plugin's cycle thread: a cycle that raises is one scrubbed stderr line, never a panic.

A real CycleThread on a real AuditLog and config; the failing piece is a plugin's sink
factory (build_doctor lets it raise), whose exception may quote a secret or refuse str().
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
from helpers import QUIET_THRESHOLDS, fake_distribution, stream_records, wait_until
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


#: A rule failing every cycle, and a thread of the plugin's that raises once told to (the
#: file ``panic-now`` appears): an unhandled exception in a thread is the daemon's panic.
PANICKING = """
import os, threading
from pathlib import Path
from kerno_otel import hookimpl

def crash(given):
    raise ZeroDivisionError("oops")

def _panic_when_told(path):
    stop = threading.Event()
    while not path.exists():
        stop.wait(0.05)
    raise RuntimeError("the plugin's thread gave up")

@hookimpl
def register_doctor_rules(register):
    register("crash", crash)

@hookimpl
def daemon_startup(context):
    path = Path(os.environ["PANIC_FILE"])
    threading.Thread(target=_panic_when_told, args=(path,), daemon=True).start()
"""


def test_a_panic_writes_the_failures_still_folded(tmp_path: Path) -> None:
    site = tmp_path / "site"
    fake_distribution(site, "kerno-test-panicky", "1.0", {"kerno_test_panicky": PANICKING})
    log = tmp_path / "log" / "kerno-audit.jsonl"
    config = tmp_path / "kerno.yaml"
    # oom_memory_pct 0: every cycle sends one finding.emit, so the log counts the cycles.
    # interval 2s: after a cycle, 2 s before the next one's rules run; the panic is well
    # within (its thread looks every 50 ms, the daemon every 200 ms).
    config.write_text(
        f"audit:\n  file_path: {log}\n"
        "doctor:\n  duration: 1s\n  interval: 2s\n  thresholds:\n    oom_memory_pct: 0\n"
        + QUIET_THRESHOLDS
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("KERNO_")}
    env["KERNO_OTEL_PLUGINS"] = "lifecycle,procfs,doctor,panicky"
    env["PYTHONPATH"] = os.pathsep.join([str(site), env.get("PYTHONPATH", "")])
    env["PANIC_FILE"] = str(tmp_path / "panic-now")
    proc = subprocess.Popen(
        [sys.executable, "-m", "kerno_otel", "run", "--config", str(config)],
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=tmp_path,
    )
    assert proc.stderr is not None
    watchdog = threading.Timer(120, proc.kill)  # bounded: a hung daemon ends the reads
    watchdog.start()
    try:
        lines = [proc.stderr.readline()]
        while len([line for line in lines if "doctor: CRITICAL oom_imminent" in line]) < 3:
            lines.append(proc.stderr.readline())
            assert lines[-1], "".join(lines)
        (tmp_path / "panic-now").touch()
        proc.communicate(timeout=60)
    finally:
        watchdog.cancel()
    assert proc.returncode == 70  # the panic's exit code
    records = stream_records(log)
    assert "daemon.panic" in [r["type"] for r in records]
    crashes = [
        r for r in records if r["type"] == "plugin.error" and r["details"]["hook"] == "rule:crash"
    ]
    cycles = len([r for r in records if r["type"] == "finding.emit"])
    # Every failed cycle counted: the first record, and the fold the panic wrote (then, on a
    # machine slow enough for one more cycle's rules to run first, that one at once).
    failed = sum(1 + r["details"].get("suppressed", 0) for r in crashes)
    assert cycles <= failed <= cycles + 1 and cycles >= 3
    assert [r["details"].get("suppressed") is None for r in crashes][:2] == [True, False]
