"""The audit worker's clean stage: ``RAW`` frames through the same Cleaner the parent uses.

When nothing but the audit pipeline sees a record in the parent (no other
processor on the provider), the parent hands its fields over as they were
emitted, so that its emitting threads pay only for encoding them; this process
builds, redacts, validates and encodes each one and passes a ``RECORD`` (or a
``REFUSE`` naming the rule) to the seal stage. Every other frame goes on as it
came, one frame out for each frame in, so the seal stage's ``TAKEN`` count is
the parent's. At end of input the seal stage's input ends too.
"""

from __future__ import annotations

import orjson

from kerno_otel.audit.files import write_all
from kerno_otel.audit.pipeline import build_cleaner
from kerno_otel.audit.record import Clean, Cleaner, Fields
from kerno_otel.audit.worker import protocol as wire

#: Frames gathered before a write to the seal stage (keeps it busy as we go).
_BATCH = 512


def clean_frame(cleaner: Cleaner, payload: bytes) -> bytes:
    """The ``RECORD`` or ``REFUSE`` frame for one ``RAW`` frame's payload."""
    try:
        fields = orjson.loads(payload)
    except orjson.JSONDecodeError:
        fields = None
    if type(fields) is list and len(fields) == len(Fields._fields) + 1 and fields[-1] == 1:
        # A 128-bit trace id, sent as hex (WorkerTransport.send_raw).
        try:
            fields = [*fields[:6], int(fields[6], 16), fields[7]]
        except (TypeError, ValueError):
            fields = None
    if type(fields) is not list or len(fields) != len(Fields._fields):  # not ours
        return wire.message(
            wire.REFUSE, {"type": None, "problem": "(unknown type): (root): not a record frame"}
        )
    result = cleaner.clean(fields)
    if type(result) is Clean:
        return b"%b%b\n" % (wire.RECORD, result.body)
    return wire.message(wire.REFUSE, result._asdict())


def serve(in_fd: int, out_fd: int) -> int:
    """Run until end of input."""
    reader = wire.FrameReader(in_fd)
    first = reader.next_frame()
    if first is None or first[0] != wire.INIT:
        return 0
    write_all(out_fd, wire.frame(*first))  # the seal stage opens the log with it
    init = wire.Init.read(first[1])
    cleaner = build_cleaner(init.config, init.event_types, init.rules, init.resource)
    for lines in reader.batches():
        out: list[bytes] = []
        for line in lines:
            kind = line[:1]
            if kind == wire.RAW:
                out.append(clean_frame(cleaner, line[1:]))
            elif kind in (wire.STATS, wire.CLOSE):  # with this stage's redaction counts
                request = wire.value(line[1:]) if len(line) > 1 else {}
                request["redactions"] = dict(cleaner.redactor.counts)
                out.append(wire.message(kind, request))
            else:
                out.append(line + b"\n")
            if len(out) >= _BATCH:
                write_all(out_fd, b"".join(out))
                out = []
        if out:
            write_all(out_fd, b"".join(out))
    return 0
