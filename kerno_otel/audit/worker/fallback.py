"""When the audit worker is lost: why it stopped, said, and its log going on in this process.

A worker that stopped on a write error under ``on_write_error: exit`` stops this
process with the same status. Any other end is said on stderr, and a
:class:`~kerno_otel.audit.sealer.Sealer` built as the worker built its own goes on
here on the same stream (resuming it, repairing a torn tail). Into it go, in this
order: an ``audit.loss`` (``worker_lost``) for every record the worker had not
confirmed durable, the frames the pipe never delivered whole, and the drops not
yet told. :class:`~kerno_otel.audit.worker.client.WorkerTransport` decides when.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TextIO

from kerno_otel.audit.pipeline import build_sealer
from kerno_otel.audit.processor import LocalTransport
from kerno_otel.audit.record import Cleaner
from kerno_otel.audit.sealer import Sealer
from kerno_otel.audit.worker import protocol as wire
from kerno_otel.audit.worker.main import deliver

EXIT_ON_WRITE_ERROR = 74  # the worker's status for on_write_error: exit (EX_IOERR)


def may_go_on(
    statuses: list[int], init: wire.Init, stderr: TextIO, exit_process: Callable[[int], None]
) -> bool:
    """Say why the worker's processes (exit ``statuses``) stopped; False when this process
    is stopped with them (``on_write_error: exit``), True when the log goes on here."""
    status = next((code for code in statuses if code), 0)
    if EXIT_ON_WRITE_ERROR in statuses and init.config.on_write_error == "exit":
        stderr.write(
            "kerno-otel: audit: the audit worker stopped on a write error "
            "(on_write_error: exit); stopping\n"
        )
        exit_process(EXIT_ON_WRITE_ERROR)
        return False
    how = f"signal {-status}" if status < 0 else f"status {status}"
    stderr.write(
        f"kerno-otel: audit: the audit worker stopped unexpectedly ({how}); "
        "the audit pipeline continues in this process\n"
    )
    return True


def local_transport(
    init: wire.Init, stderr: TextIO, exit_process: Callable[[int], None]
) -> LocalTransport:
    """The in-process fallback, not yet opened: a sealer built from the worker's ``INIT``."""
    return LocalTransport(
        build_sealer(
            init.config,
            init.rules,
            init.resource,
            event_types=init.event_types,
            version=init.version,
            stderr=stderr,
            exit_process=exit_process,
        )
    )


def replay(
    sealer: Sealer,
    waiting: bytes,
    *,
    records: int,
    durable: int,
    dropped: dict[str, int],
    cleaner: Cleaner,
) -> None:
    """Hand the fallback ``sealer`` what the worker left: the loss of every record of the
    parent's ``records`` it did not confirm ``durable`` and that is not ``waiting``
    (frames the pipe did not take whole, replayed here in order, ``RAW`` ones cleaned
    by ``cleaner``), then the ``dropped`` counts not yet sent."""
    lines = [line for line in waiting.split(b"\n") if line]
    unsent = sum(wire.records_in(line) for line in lines)
    lost = records - unsent - durable
    if lost > 0:
        sealer.lost(lost)
    for line in lines:
        deliver(sealer, line[:1], line[1:], cleaner)
    if dropped:
        sealer.dropped(dropped)
