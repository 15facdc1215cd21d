"""The audit worker: the seal half of the pipeline in a child process (``audit.pipeline: process``).

The parent cleans every record (build, redact, validate, encode) on its
emitting threads and sends the bodies here over a private pipe (frames of
:mod:`kerno_otel.audit.worker.protocol`); this process seals and writes them
with the same :class:`~kerno_otel.audit.sealer.Sealer` the thread mode uses, so
the emitters' interpreter never pays for hashing, writing or fsyncing.

It ignores SIGINT, SIGTERM, SIGHUP and SIGQUIT: its life follows the parent's
pipe. At end of input it finishes the log in order (last checkpoint, fsync),
so even a parent killed with SIGKILL leaves every record it handed over written.
"""

from __future__ import annotations

import collections
import gc
import os
import select
import signal
import sys
import threading
import time
from typing import Any, TextIO, cast

from kerno_otel.audit.files import write_all
from kerno_otel.audit.pipeline import build_sealer
from kerno_otel.audit.record import Cleaner
from kerno_otel.audit.sealer import Sealer
from kerno_otel.audit.worker import clean as clean_stage
from kerno_otel.audit.worker import protocol as wire

#: How long a worker whose parent died may go on trying to finish the log (a full
#: disk under ``on_write_error: block``) before it gives up, saying how much is lost.
ORPHAN_GRACE_S = 60.0


def deliver(sealer: Sealer, kind: bytes, payload: bytes, cleaner: Cleaner | None = None) -> int:
    """Hand one record-carrying frame to ``sealer``; how many of the parent's records it was.

    The one dispatcher for those frames: the seal stage's loop, and the parent's
    in-process fallback when the worker is lost (which cleans ``RAW`` frames with
    ``cleaner`` first), replay frames through it.
    """
    if kind == wire.RAW and cleaner is not None:
        frame = clean_stage.clean_frame(cleaner, payload)
        kind, payload = frame[:1], frame[1:-1]
    if kind == wire.RECORD:
        sealer.put(payload)
        return 1
    if kind == wire.REFUSE:
        refused = wire.value(payload)
        sealer.refused(refused["type"], str(refused["problem"]))
        return 1
    if kind == wire.DROP:
        types = wire.value(payload)["types"]
        sealer.dropped(types)
        return sum(types.values())
    return 0


class _Out:
    """Frames to the parent, whole, from any thread; quiet once the parent is gone."""

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._lock = threading.Lock()
        self.gone = False

    def send(self, data: bytes) -> None:
        with self._lock:
            if self.gone:
                return
            try:
                write_all(self._fd, data)
            except OSError:  # the parent is gone; the log is still finished in order
                self.gone = True


class _Relay:
    """A text stream whose writes reach the parent's stderr."""

    def __init__(self, out: _Out) -> None:
        self._out = out

    def write(self, text: str) -> int:
        self._out.send(wire.message(wire.STDERR, text))
        return len(text)

    def flush(self) -> None:
        pass


def serve(in_fd: int, out_fd: int) -> int:
    """Run until end of input (or ``CLOSE``): open the log, then seal what the parent sends."""
    out = _Out(out_fd)
    reader = wire.FrameReader(in_fd)
    first = reader.next_frame()
    if first is None or first[0] != wire.INIT:
        return 0
    init = wire.Init.read(first[1])
    config = init.config
    relay = cast(TextIO, _Relay(out))  # write() and flush() are all the sealer uses
    sealer = build_sealer(
        config,
        init.rules,
        init.resource,
        event_types=init.event_types,
        version=init.version,
        stderr=relay,
    )
    # (writer ticket, parent records taken by then): which of the parent's are durable.
    marks: collections.deque[tuple[int, int]] = collections.deque()

    def on_durable(ticket: int) -> None:
        done = None
        while marks and marks[0][0] <= ticket:
            done = marks.popleft()[1]
        if done is not None:
            out.send(wire.message(wire.DURABLE, done))

    try:
        sealer.open(on_durable)
    except Exception as exc:
        out.send(wire.message(wire.ERROR, {"kind": type(exc).__name__, "message": str(exc)}))
        return 0
    out.send(wire.frame(wire.READY))
    threading.Thread(
        target=_watch_parent, args=(os.getppid(), sealer), name="kerno-audit-orphan", daemon=True
    ).start()
    ack_every = max(1, min(512, config.queue_size // 4))
    taken = 0  # frames taken in
    records = 0  # of those, the parent's records (RECORD and REFUSE)
    acked = 0
    for lines in reader.batches():
        bodies: list[bytes] = []
        for line in lines:
            kind = line[:1]
            if kind == wire.RECORD:
                bodies.append(line[1:])
                if len(bodies) < ack_every:
                    continue
            if bodies:  # a run of records under one lock
                sealer.put_many(bodies)
                records += len(bodies)
                taken += len(bodies)
                bodies = []
            if kind == wire.RECORD:  # a 1 MiB read is ~100 ms of work: room as we go
                out.send(wire.message(wire.TAKEN, taken))
                acked = taken
                continue
            taken += 1
            if kind == wire.CLOSE:
                _close(sealer, out, records, line[1:])
                return 0
            if not _request(sealer, out, marks, kind, line[1:], records):
                records += deliver(sealer, kind, line[1:])
        if bodies:
            sealer.put_many(bodies)
            records += len(bodies)
            taken += len(bodies)
        marks.append((sealer.enqueued, records))
        # Room for the parent to send more: every ack_every frames, and whenever the
        # pipe is empty, not after every frame (each message costs the parent a wake-up).
        if taken - acked >= ack_every or not select.select([in_fd], [], [], 0)[0]:
            out.send(wire.message(wire.TAKEN, taken))
            acked = taken
    # The parent went away without closing (or the clean stage died): finish the log in
    # order all the same, and say what is durable to a parent that may still listen.
    sealer.close()
    out.send(wire.message(wire.DURABLE, records))
    return 0


def _request(
    sealer: Sealer,
    out: _Out,
    marks: collections.deque[tuple[int, int]],
    kind: bytes,
    payload: bytes,
    records: int,
) -> bool:
    """Answer a ``FLUSH`` or ``STATS`` frame; False for any other kind."""
    if kind == wire.FLUSH:
        request = wire.value(payload)
        marks.append((sealer.enqueued, records))
        ok = sealer.flush(int(request.get("timeout_ms", 30_000)) / 1000.0)
        answer: dict[str, Any] = {"id": request["id"], "ok": ok}
        out.send(wire.message(wire.FLUSHED, answer))
        if ok:
            out.send(wire.message(wire.DURABLE, records))
    elif kind == wire.STATS:
        request = wire.value(payload)
        stats = _stats(sealer, request)
        out.send(wire.message(wire.STATS, {"id": request["id"], "stats": stats}))
    else:
        return False
    return True


def _close(sealer: Sealer, out: _Out, records: int, payload: bytes) -> None:
    sealer.close()
    out.send(wire.message(wire.DURABLE, records))
    stats = _stats(sealer, wire.value(payload) if payload else {})
    out.send(wire.message(wire.CLOSED, {"stats": stats}))


def _stats(sealer: Sealer, request: dict[str, Any]) -> dict[str, Any]:
    """The sealer's counters, with the clean stage's redactions (carried by ``request``)."""
    stats = sealer.counters.as_dict()
    stats["redactions"] = request.get("redactions", {})
    return stats


def _watch_parent(parent: int, sealer: Sealer) -> None:
    """Give up, loudly, when the parent is gone and the log cannot be finished.

    Normally end of input follows the parent's death and the worker finishes the
    log in moments; only a writer that keeps failing (a full disk, with
    ``on_write_error: block``) would otherwise retry forever with nobody left.
    """
    while os.getppid() == parent:
        time.sleep(1.0)  # no event tells a child its parent died; polling is the way
    time.sleep(ORPHAN_GRACE_S)
    sys.stderr.write(
        f"kerno-otel: audit worker: the emitting process is gone and {sealer.unwritten} records "
        f"could not be written to {sealer.config.file_path} within {ORPHAN_GRACE_S:g}s; "
        "giving up\n"
    )
    sys.stderr.flush()
    os._exit(75)  # EX_TEMPFAIL


def main(stage: str = "seal") -> int:
    """A worker stage's entry point (``clean`` or ``seal``): frames on stdin, answers on stdout."""
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT):
        signal.signal(signum, signal.SIG_IGN)
    # A daemon that takes its signals with sigtimedwait has them blocked; the mask is
    # inherited, and nothing here should depend on it.
    signal.pthread_sigmask(signal.SIG_SETMASK, set())
    # A stage makes and drops a few short-lived containers per record and never a cycle
    # (records from JSON cannot hold one): the cyclic collector would only rescan them.
    gc.freeze()
    gc.set_threshold(100_000, 50, 100)
    if stage == "clean":
        try:
            return clean_stage.serve(sys.stdin.fileno(), sys.stdout.fileno())
        except BrokenPipeError:  # the seal stage is gone; the parent sees it
            return 1
    return serve(sys.stdin.fileno(), sys.stdout.fileno())
