"""SIGKILL x 20 for each fsync mode (``always``, ``batch``) and pipeline (``process``,
``thread``): every acknowledged record is in the log, and the chain verifies across
every restart. The four runs go side by side (each in its own directory) to keep the
file under a minute and a half."""

from __future__ import annotations

import io
import os
import random
import signal
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path

import orjson
from helpers import check_chain, stream_lines, stream_lines_after_kill, wait_until

from kerno_otel.audit import files
from kerno_otel.audit.log import AuditLog
from kerno_otel.config import AuditConfig
from kerno_otel.verify.verify import verify

KILLS = 20
CHILD = Path(__file__).with_name("crash_child.py")
REPO = Path(__file__).resolve().parents[2]


@dataclass
class Run:
    pipeline: str
    fsync: str
    live: Path
    acknowledged: list[str] = field(default_factory=list)
    kills: int = 0
    torn_after_kill: int = 0
    failures: list[str] = field(default_factory=list)


def _reader(child: subprocess.Popen[bytes], into: list[str], ready: threading.Event) -> None:
    assert child.stdout is not None
    for raw in child.stdout:
        line = raw.decode().strip()
        if line == "ready":
            ready.set()
        elif line:
            into.append(line)


def _one_run(run: Run, seed: int) -> None:
    rng = random.Random(seed)
    for attempt in range(KILLS):
        acked: list[str] = []
        ready = threading.Event()
        child = subprocess.Popen(
            [sys.executable, str(CHILD), str(run.live), run.pipeline, run.fsync, f"k{attempt}"],
            stdout=subprocess.PIPE,
            env={**os.environ, "PYTHONPATH": str(REPO)},
        )
        reader = threading.Thread(target=_reader, args=(child, acked, ready), daemon=True)
        reader.start()
        # Where the kill lands: after a random number of acknowledged records.
        target = rng.randrange(1, 400 if run.fsync == "batch" else 120)
        if not (ready.wait(60) and wait_until(lambda a=acked, t=target: len(a) >= t, 60)):
            run.failures.append(f"kill {attempt}: the child made no progress")
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
        reader.join(10)
        run.acknowledged.extend(acked)
        run.kills += 1
        # process mode: the orphaned audit worker finishes the log, holding the lock
        os.close(files.lock_stream(run.live, wait_s=60))
        # The thread pipeline dies with the process, possibly inside a write(): a torn
        # last line is allowed here, and the next start must cut it (audit.recover).
        lines, torn = stream_lines_after_kill(run.live)
        if torn and run.pipeline == "process":
            run.failures.append(f"kill {attempt}: the orphaned worker left a torn line")
        run.torn_after_kill += torn
        problems = check_chain(lines)
        if problems:
            run.failures.append(f"kill {attempt}: chain broken: {problems[:3]}")
    with AuditLog(
        AuditConfig(file_path=str(run.live), pipeline=run.pipeline, fsync=run.fsync),
        stderr=io.StringIO(),
    ) as log:
        log.emit(
            "plugin.load",
            details={"plugin": "final", "distribution": "crash", "version": "1", "hooks": []},
        )


def test_every_acknowledged_record_survives_20_kills(tmp_path: Path) -> None:
    runs = [
        Run(pipeline, fsync, tmp_path / f"{pipeline}-{fsync}" / "kerno-audit.jsonl")
        for pipeline in ("process", "thread")
        for fsync in ("always", "batch")
    ]
    threads = [threading.Thread(target=_one_run, args=(run, seed)) for seed, run in enumerate(runs)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(240)
        assert not thread.is_alive()
    summary = []
    for run in runs:
        assert run.failures == [], (run.pipeline, run.fsync, run.failures)
        lines = stream_lines(run.live)
        assert check_chain(lines) == []
        records = [orjson.loads(line) for line in lines]
        present = {r["details"]["plugin"] for r in records if r["type"] == "plugin.load"}
        missing = [name for name in run.acknowledged if name not in present]
        assert missing == [], (run.pipeline, run.fsync, len(missing), missing[:5])
        report = verify([run.live.parent])
        assert report.intact, report.problems
        types = [r["type"] for r in records]
        assert types.count("audit.start") == KILLS + 1  # one stream, resumed at every start
        # every torn tail a kill left was repaired, in-band, by the next start
        assert types.count("audit.recover") >= run.torn_after_kill, (run.pipeline, run.fsync)
        summary.append(
            {
                "pipeline": run.pipeline,
                "fsync": run.fsync,
                "kills": run.kills,
                "acknowledged": len(run.acknowledged),
                "written": len(present) - 1,
                "torn_after_kill": run.torn_after_kill,
                "recovered_torn_tails": types.count("audit.recover"),
                "rotations": types.count("audit.rotate"),
                "records": len(records),
            }
        )
    print(orjson.dumps(summary).decode())


def test_a_kill_before_the_writer_switches_files_leaves_the_rotated_file_repaired(
    tmp_path: Path,
) -> None:
    """Rotation renames the live file and opens its successor under the sealer's lock; the
    writer finishes the records queued before the switch in the renamed file. A kill in
    that window leaves an empty live file and the rotated file ending torn: the next start
    cuts the torn tail from the rotated file (set aside, ``audit.recover``) and continues."""
    live = tmp_path / "log" / "kerno-audit.jsonl"
    config = AuditConfig(file_path=str(live), max_size_mb=0.005, pipeline="thread")
    with AuditLog(config, stderr=io.StringIO()) as log:
        for i in range(40):
            log.emit(
                "plugin.load",
                details={"plugin": f"p{i}", "distribution": "d", "version": "1", "hooks": []},
            )
        assert log.flush()
    rotated = files.rotated_files(live)
    assert rotated, "the test needs a rotation"
    newest = rotated[-1]
    # What the kill leaves: the successor opened but never written, the rotated file torn.
    live.write_bytes(b"")
    with newest.open("ab") as f:
        f.write(b'{"v":"1","seq":99999,"ts":"2026-11-29T10:00:00.0')
    with AuditLog(config, stderr=io.StringIO()) as log:
        log.emit(
            "plugin.load",
            details={"plugin": "after", "distribution": "d", "version": "1", "hooks": []},
        )
        assert log.flush()
    assert newest.read_bytes().endswith(b"\n")
    [aside] = live.parent.glob(f"{newest.name}.torn-*")
    assert aside.read_bytes().startswith(b'{"v":"1","seq":99999')
    recovers = [
        orjson.loads(line) for line in live.read_bytes().splitlines() if b'"audit.recover"' in line
    ]
    assert [r["details"]["set_aside"] for r in recovers] == [aside.name]
    report = verify([live.parent])
    assert report.problems == [], report.problems
