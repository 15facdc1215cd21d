"""A writing daemon for the crash tests: emits numbered records and prints each number
once it is acknowledged (durable per the fsync policy), until it is killed.

    python crash_child.py LIVE PIPELINE FSYNC TAG

Record names are ``TAG-<n>``.
``fsync: always``: ``emit`` returns once the record is on disk, so each is acknowledged
on return. ``batch``: every 64 records, ``flush()`` returning True acknowledges them.
"""

from __future__ import annotations

import sys

from kerno_otel.audit.log import AuditLog
from kerno_otel.config import AuditConfig


def main() -> None:
    live, pipeline, fsync, tag = sys.argv[1:5]
    config = AuditConfig(
        file_path=live, pipeline=pipeline, fsync=fsync, max_size_mb=0.25, fsync_interval_ms=20
    )
    log = AuditLog(config, stderr=sys.stderr)
    out = sys.stdout
    out.write("ready\n")
    out.flush()
    i = 0
    while True:
        name = f"{tag}-{i}"
        log.emit(
            "plugin.load",
            details={"plugin": name, "distribution": "crash", "version": "1", "hooks": []},
        )
        if fsync == "always":
            out.write(f"{name}\n")
            out.flush()
        elif i % 64 == 63 and log.flush(timeout=30):
            out.write("".join(f"{tag}-{j}\n" for j in range(i - 63, i + 1)))
            out.flush()
        i += 1


if __name__ == "__main__":
    main()
