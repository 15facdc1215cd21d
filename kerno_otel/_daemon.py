"""The daemon's skeleton: open the audit log, wait for a signal or a deadline, close cleanly.

What runs inside (plugins, sources, doctor cycles, HTTP) arrives with the
plugin framework; today ``kerno-otel run`` keeps an audit stream open and
closes it with everything flushed on SIGTERM/SIGINT.
"""

from __future__ import annotations

import signal
import threading
from types import FrameType
from typing import TextIO

from kerno_otel._auditlog import AuditLog
from kerno_otel._config import Config


def run(config: Config, *, duration: float | None, stderr: TextIO) -> int:
    """Run until SIGTERM/SIGINT (or ``duration`` seconds); returns the exit code."""
    stop = threading.Event()
    received: list[str] = []

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        received.append(signal.Signals(signum).name)
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        log = AuditLog(config.audit, stderr=stderr)
        stderr.write(f"kerno-otel: audit log {config.audit.file_path}\n")
        try:
            stop.wait(duration)
        finally:
            log.close()
        stats = log.stats()
        why = received[0] if received else "deadline"
        stderr.write(
            f"kerno-otel: stopped ({why}); {stats['records_written']} records written, "
            f"{sum(stats['records_dropped'].values())} dropped\n"
        )
        return 0
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
