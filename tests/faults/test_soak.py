"""A short soak: 12 s at about 3,000 records/s with a rotation every few hundred
records (compressed): nothing lost, one chain, and the resident memory flat."""

from __future__ import annotations

import io
import threading
import time
from pathlib import Path

import orjson
import pytest
from helpers import stream_lines

from kerno_otel.audit.log import AuditLog
from kerno_otel.config import AuditConfig
from kerno_otel.verify.verify import verify

SECONDS = 12.0
RATE = 3000  # records a second
TICK = 0.01


def rss_kb(pid: int | str = "self") -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


@pytest.mark.parametrize("pipeline", ["process", "thread"])
def test_soak_loses_nothing_and_keeps_memory_flat(tmp_path: Path, pipeline: str) -> None:
    live = tmp_path / "log" / "kerno-audit.jsonl"
    config = AuditConfig(
        file_path=str(live), pipeline=pipeline, max_size_mb=0.1, compress=True, fsync="batch"
    )
    log = AuditLog(config, stderr=io.StringIO())
    pids = ["self"] + [str(p.pid) for p in getattr(log._processor.transport, "_procs", [])]
    per_tick = int(RATE * TICK)
    pace = threading.Event()  # never set: its wait paces the producer, it synchronises nothing
    sent = 0
    samples: list[int] = []
    start = time.monotonic()
    next_sample = start + 2.0  # after the warm-up
    while (now := time.monotonic()) - start < SECONDS:
        for _ in range(per_tick):
            log.emit(
                "plugin.load",
                details={
                    "plugin": f"s{sent}",
                    "distribution": "soak",
                    "version": "1",
                    "hooks": ["h"] * 8,
                },
            )
            sent += 1
        if now >= next_sample:
            samples.append(sum(rss_kb(pid) for pid in pids))
            next_sample += 1.0
        due = start + (sent / RATE)
        pace.wait(max(0.0, due - time.monotonic()))
    elapsed = time.monotonic() - start
    assert log.flush(timeout=60)
    stats = log.stats()
    log.close()
    records = [orjson.loads(line) for line in stream_lines(live)]
    names = [r["details"]["plugin"] for r in records if r["type"] == "plugin.load"]
    assert names == [f"s{i}" for i in range(sent)]
    assert not [r for r in records if r["type"] == "audit.loss"]
    report = verify([live.parent])
    assert report.intact, report.problems[:3]
    rotations = sum(r["type"] == "audit.rotate" for r in records)
    assert rotations >= 20
    growth = samples[-1] - samples[0]
    assert growth < 16 * 1024, samples  # flat: less than 16 MB over the run
    print(
        orjson.dumps(
            {
                "pipeline": pipeline,
                "records": sent,
                "seconds": round(elapsed, 1),
                "rate": round(sent / elapsed),
                "rotations": rotations,
                "rss_kb_first": samples[0],
                "rss_kb_last": samples[-1],
                "rss_kb_max": max(samples),
                "write_errors": stats["write_errors"],
            }
        ).decode()
    )
