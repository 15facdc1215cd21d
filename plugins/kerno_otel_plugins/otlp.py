"""The otlp plugin: runs the OTLP forwarder beside the daemon when ``otlp.enabled`` is true.

The forwarder reads the audit files, so it starts after the log is open and
stops after everything else has had its say: ``daemon_shutdown`` is
``trylast``, flushes the log and gives the forwarder a bounded time to ship
what is on disk. Anything left (a dead collector, or the final checkpoint
``close`` writes afterwards) stays in the files and goes out on the next run
from the saved cursor. The running forwarder is ``context.state["otlp"]``
(the plugin's own slot); its ``stats()`` are the forwarder's numbers.
"""

from __future__ import annotations

import sys
from typing import Final

from kerno_otel import Forwarder, ForwarderOptions, hookimpl
from kerno_otel.hookspecs import DaemonContext

#: Stable plugin name (the entry point's name).
NAME: Final = "otlp"
#: Seconds the daemon waits at shutdown for the forwarder to catch up, then to stop.
CATCH_UP_S: Final = 5.0
STOP_S: Final = 5.0


@hookimpl
def daemon_startup(context: DaemonContext) -> None:
    section = context.section("otlp")
    if not section.get("enabled"):
        return
    forwarder = Forwarder(
        context.audit.config.file_path, ForwarderOptions.from_section(section), stderr=sys.stderr
    )
    forwarder.start()
    context.state[NAME] = forwarder


@hookimpl(trylast=True)
def daemon_shutdown(context: DaemonContext, reason: str, uptime_s: float) -> None:
    forwarder = context.state.pop(NAME, None)
    if not isinstance(forwarder, Forwarder):
        return
    context.audit.flush()
    if not forwarder.wait_caught_up(CATCH_UP_S):
        stats = forwarder.stats()
        sys.stderr.write(
            f"kerno-otel: otlp: {stats['lag_records']} records not yet acknowledged at "
            "shutdown; they stay in the audit files and are sent on the next run\n"
        )
    forwarder.stop(STOP_S)
