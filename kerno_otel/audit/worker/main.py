"""The audit worker: child processes that run the audit processor's stages for their parent.

``audit.pipeline: process`` (the default) moves redact → validate → seq → chain
→ encode → write out of the emitting process, so the emitters' threads pay only
for encoding a record's fields and handing them over. The work is split in two
stages, each a process of its own, so that it is not one interpreter lock's
worth of work:

- the cleaning stage (:func:`clean`) builds each record, redacts and validates
  it, and passes it on, or passes on a ``reject`` naming the failing rule;
- the sealing stage (:func:`serve`) assigns ``seq``, chains, encodes, writes,
  rotates, checkpoints: the :class:`~kerno_otel.audit.processor.AuditProcessor`
  taking already-clean records.

The parent side is :class:`kerno_otel.audit.worker.client.WorkerProcessor`. They talk over anonymous
pipes (never a file or socket: raw values leave the parent only for its own
child, which redacts them before anything is written), one JSON document per
line:

- parent → cleaning stage: first ``{"op": "init", ...}`` (passed on to the
  sealing stage, which opens the log with it); then a record is an array
  ``[ts_ns, type, actor, severity, outcome, details, trace_id, span_id]``;
  anything else is an object with an ``op``: ``flush``, ``stats``,
  ``reject``, ``dropped``, ``close``.
- cleaning → sealing stage: a clean record as the record itself
  (``{"v":"1",...}``), everything else as it came.
- sealing stage → parent: ``ready`` or ``error`` once, then ``stderr``,
  ``read`` (lines taken in, one per line the parent sent: its ``queue_size``
  bound), ``durable`` (how many of the parent's records are on disk),
  ``flushed``, ``stats``, ``checkpoint`` and ``closed``.

The stages ignore SIGINT, SIGTERM, SIGHUP and SIGQUIT: their life follows the
parent's pipe. At end of input the sealing stage shuts the processor down in
order (final checkpoint, fsync), so even a parent killed with SIGKILL leaves
every record it had handed over written.
"""

from __future__ import annotations

import collections
import os
import select
import signal
import sys
import threading
import time
from dataclasses import asdict
from typing import Any

import orjson

from kerno_otel.audit.writer import Writer
from kerno_otel.config.load import AuditConfig, CheckpointConfig
from kerno_otel.records.catalogue import EventType
from kerno_otel.records.redact import RedactionRule

#: Bytes the worker asks for per read (a pipe holds at most 1 MiB unprivileged).
_READ = 1 << 20
#: How long a worker whose parent died may go on trying to finish the log (a full
#: disk under ``on_write_error: block``) before it gives up, saying how much is lost.
_ORPHAN_GRACE_S = 60.0


def config_to_wire(config: AuditConfig) -> dict[str, Any]:
    """``config`` as JSON-able data (the inverse of :func:`config_from_wire`)."""
    return asdict(config)


def config_from_wire(data: dict[str, Any]) -> AuditConfig:
    values = dict(data)
    values["redaction"] = tuple(RedactionRule(**rule) for rule in values.get("redaction", ()))
    values["checkpoint"] = CheckpointConfig(**values.get("checkpoint", {}))
    values["pipeline"] = "thread"  # the worker runs the stages itself
    return AuditConfig(**values)


def type_from_wire(data: dict[str, Any]) -> EventType:
    return EventType(**data)


class _Acks:
    """Writes messages to the parent, whole lines, from any thread."""

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._lock = threading.Lock()
        self.gone = False

    def send(self, message: dict[str, Any]) -> None:
        data = orjson.dumps(message) + b"\n"
        with self._lock:
            if self.gone:
                return
            view = memoryview(data)
            try:
                while view:
                    view = view[os.write(self._fd, view) :]
            except OSError:  # the parent is gone; the log is still finished in order
                self.gone = True


class _Relay:
    """A text stream whose writes reach the parent's stderr object."""

    def __init__(self, acks: _Acks) -> None:
        self._acks = acks

    def write(self, text: str) -> int:
        self._acks.send({"stderr": text})
        return len(text)

    def flush(self) -> None:
        pass


def serve(in_fd: int, out_fd: int) -> int:
    """Run the sealing stage until end of input: it takes the records the cleaning
    stage (:func:`clean`) already redacted and validated, and every request."""
    # Imported here: the module is also imported by the parent for the wire helpers.
    from kerno_otel.audit.processor import make_processor

    acks = _Acks(out_fd)
    pending = b""
    first, _, pending = _read_line(in_fd, pending)
    if first is None:
        return 0
    init = orjson.loads(first)
    relay = _Relay(acks)
    try:
        processor, redactor = make_processor(
            config_from_wire(init["config"]),
            event_types=[type_from_wire(t) for t in init["types"]],
            redaction_rules=[RedactionRule(**r) for r in init["rules"]],
            resource=init["resource"],
            version=init["version"],
            stderr=relay,  # type: ignore[arg-type]
        )
        processor.open()
    except Exception as exc:
        acks.send({"error": {"kind": type(exc).__name__, "message": str(exc)}})
        return 0
    acks.send({"ready": True})

    def stats(request: dict[str, Any]) -> dict[str, Any]:
        """The counters, with the cleaning stage's redactions (carried by ``request``)."""
        counters = asdict(processor.counters)
        redactions = collections.Counter(redactor.counts)
        redactions.update(request.get("redactions", {}))
        counters["redactions"] = dict(redactions)
        return counters

    processor.on_checkpoint.append(lambda details: acks.send({"checkpoint": details}))
    # (writer ticket, parent records taken so far): the parent learns which are durable.
    marks: collections.deque[tuple[int, int]] = collections.deque()

    def on_durable(ticket: int) -> None:
        done = None
        while marks and marks[0][0] <= ticket:
            done = marks.popleft()[1]
        if done is not None:
            acks.send({"durable": done})

    writer = processor._writer
    if writer is not None:
        writer.on_durable = on_durable
        threading.Thread(
            target=_watch_parent,
            args=(os.getppid(), writer),
            name="kerno-audit-orphan",
            daemon=True,
        ).start()
    accept_many = processor.accept_many
    loads = orjson.loads
    taken = 0  # records taken in
    read = 0  # lines taken in, records and requests
    acked = 0
    ack_every = max(1, min(512, processor.config.queue_size // 4))
    while True:
        try:
            data = os.read(in_fd, _READ)
        except InterruptedError:  # pragma: no cover - PEP 475 retries reads
            continue
        if not data:
            break
        lines = (pending + data).split(b"\n")
        pending = lines.pop()
        base = read
        read += len(lines)
        batch: list[dict[str, Any]] = []
        for index, line in enumerate(lines):
            if line[2:3] == b"v":  # {"v":"1",...}: cleaned by the cleaning stage
                batch.append(loads(line))
                if len(batch) >= ack_every:  # a 1 MiB read is ~100 ms of work: ack as we go
                    accept_many(batch, trusted=True)
                    taken += len(batch)
                    batch = []
                    acked = base + index + 1
                    acks.send({"read": acked})
                continue
            if batch:
                accept_many(batch, trusted=True)
                taken += len(batch)
                batch = []
            message = loads(line)
            op = message.get("op")
            if op == "flush":
                marks.append((processor.enqueued, taken))
                ok = processor.force_flush(int(message.get("timeout_ms", 30_000)))
                acks.send({"flushed": message["id"], "ok": ok, "durable": taken if ok else None})
            elif op == "stats":
                acks.send({"stats": stats(message), "id": message["id"]})
            elif op == "reject":
                processor.reject(str(message["type"]), str(message["problem"]))
                taken += 1  # one of the parent's records
            elif op == "dropped":
                processor.note_dropped(message["types"])
            elif op == "close":
                processor.shutdown()
                acks.send({"closed": True, "stats": stats(message), "durable": taken})
                return 0
        if batch:
            accept_many(batch, trusted=True)
            taken += len(batch)
        marks.append((processor.enqueued, taken))
        # Room for the parent to send more (its queue_size bound): every ack_every
        # records (a quarter of the bound, at most 512), and whenever the pipe is
        # empty, not after every line (each message costs the parent a wake-up).
        if read - acked >= ack_every or not select.select([in_fd], [], [], 0)[0]:
            acks.send({"read": read})
            acked = read
    # The parent went away without closing: finish the log in order all the same.
    processor.shutdown()
    return 0


def clean(in_fd: int, out_fd: int) -> int:
    """The cleaning stage: redact and validate the parent's records for the sealing stage.

    Every line goes on, in order: a clean record as the record itself, a refused
    one as a ``reject`` request naming the rule, requests as they came (``stats``
    and ``close`` with this stage's redaction counts). One line out for each line
    in, so the sealing stage's ``read`` count is the parent's. At end of input
    the sealing stage's input ends too.
    """
    from kerno_otel.audit.chain import Timestamps
    from kerno_otel.audit.processor import clean_record, make_processor, new_record

    first, _, pending = _read_line(in_fd, b"")
    if first is None:
        return 0
    _write_fd(out_fd, first + b"\n")  # the sealing stage opens the log with it
    init = orjson.loads(first)
    config = config_from_wire(init["config"])
    processor, redactor = make_processor(
        config,
        event_types=[type_from_wire(t) for t in init["types"]],
        redaction_rules=[RedactionRule(**r) for r in init["rules"]],
        resource=init["resource"],
        version=init["version"],
    )
    validator = processor._validator
    resource = processor.resource
    ts_format = Timestamps().format
    loads, dumps = orjson.loads, orjson.dumps
    batch_size = max(1, min(512, config.queue_size // 4))
    while True:
        data = os.read(in_fd, _READ)
        if not data:
            return 0
        lines = (pending + data).split(b"\n")
        pending = lines.pop()
        out: list[bytes] = []
        for line in lines:
            if line[:1] != b"[":
                message = loads(line)
                if message.get("op") in ("stats", "close"):
                    message["redactions"] = dict(redactor.counts)
                    line = dumps(message)
                out.append(line)
                continue
            ts_ns, type_name, actor, severity, outcome, details, trace, span = loads(line)
            record = new_record(
                ts_format(ts_ns),
                type_name,
                actor,
                severity,
                outcome,
                details,
                resource,
                trace,
                span,
            )
            problem = clean_record(record, redactor, validator)
            if problem is None:
                out.append(dumps(record))
            else:
                out.append(dumps({"op": "reject", "type": str(type_name), "problem": problem}))
            if len(out) >= batch_size:  # keep the sealing stage busy as we go
                _write_fd(out_fd, b"\n".join(out) + b"\n")
                out = []
        if out:
            _write_fd(out_fd, b"\n".join(out) + b"\n")


def _write_fd(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _watch_parent(parent: int, writer: Writer) -> None:
    """Give up, loudly, when the parent is gone and the log cannot be finished.

    Normally end of input follows the parent's death and the worker finishes the
    log in moments; only a writer that keeps failing (a full disk, with
    ``on_write_error: block``) would otherwise retry forever with nobody left.
    """
    while os.getppid() == parent:
        time.sleep(1.0)
    time.sleep(_ORPHAN_GRACE_S)
    unwritten = writer.enqueued - writer.written
    sys.stderr.write(
        f"kerno-otel: audit worker: the emitting process is gone and {unwritten} records could "
        f"not be written to {writer.live} within {_ORPHAN_GRACE_S:g}s; giving up\n"
    )
    sys.stderr.flush()
    os._exit(75)  # EX_TEMPFAIL


def _read_line(fd: int, pending: bytes) -> tuple[bytes | None, bytes, bytes]:
    while b"\n" not in pending:
        data = os.read(fd, _READ)
        if not data:
            return None, b"", b""
        pending += data
    line, _, rest = pending.partition(b"\n")
    return line, b"\n", rest


def main(role: str = "seal") -> int:
    """The worker's entry point: ``clean`` (the cleaning stage) or ``seal``."""
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT):
        signal.signal(signum, signal.SIG_IGN)
    # A daemon that takes its signals with sigtimedwait has them blocked; the mask is
    # inherited, and nothing here should depend on it.
    signal.pthread_sigmask(signal.SIG_SETMASK, set())
    if role == "clean":
        try:
            return clean(sys.stdin.fileno(), sys.stdout.fileno())
        except BrokenPipeError:  # the sealing stage is gone; the parent sees it
            return 1
    return serve(sys.stdin.fileno(), sys.stdout.fileno())


if __name__ == "__main__":
    sys.exit(main())
