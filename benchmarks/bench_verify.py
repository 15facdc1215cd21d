"""Speed of ``audit verify`` against plain ``sha256sum`` of the same files, in one run.

    python benchmarks/bench_verify.py --records 1000000 --out /tmp/bench-verify

Builds a log of N mixed events through ``AuditLog`` (rotation at --max-size-mb,
signed checkpoints every 10,000 records), then times ``verify`` (chain, seq,
checkpoint signatures, truncation) and ``sha256sum`` over the same files (a
subprocess; the floor for reading and hashing every byte). Files are left
uncompressed unless --compress: sha256sum of a .gz hashes the compressed bytes,
so the comparison would be unfair to verify. CPU seconds (user + system, child
processes included) are printed too: wall time on a loaded machine says little about
either side. The last line printed is one JSON
object; ``ratio`` is sha256sum_seconds / verify_seconds (goal: >= 1.0; verify
checks the files on every core, see ``kerno_otel/verify/parallel.py``).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from samples import sample_events

from kerno_otel.audit.files import rotated_files
from kerno_otel.audit.keys import generate, load_public
from kerno_otel.audit.log import AuditLog
from kerno_otel.config import AuditConfig, CheckpointConfig
from kerno_otel.verify.verify import verify

_BATCH = 100_000  # events generated at a time, to keep memory flat


def build(out: Path, records: int, max_size_mb: float, compress: bool) -> Path:
    keys = generate(out / "keys")
    cfg = AuditConfig(
        file_path=str(out / "log" / "kerno-audit.jsonl"),
        max_size_mb=max_size_mb,
        compress=compress,
        checkpoint=CheckpointConfig(key_file=str(keys.private_path), every_records=10_000),
    )
    with AuditLog(cfg, stderr=sys.stderr) as log:
        done = 0
        while done < records:
            for ev in sample_events(min(_BATCH, records - done), seed=done + 1):
                log.emit(ev.type, actor=ev.actor, details=ev.details, outcome=ev.outcome)
            done += _BATCH
    return keys.public_path


def cpu_since(before: os.times_result) -> float:
    """CPU seconds (user + system) used since ``before``, here and in child processes:
    on a machine shared with other work, the figure that does not depend on the load."""
    now = os.times()
    return sum(now[i] - before[i] for i in range(4))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=200_000)
    parser.add_argument("--out", type=Path, required=True, help="directory for the log (emptied)")
    parser.add_argument("--max-size-mb", type=float, default=100.0)
    parser.add_argument("--compress", action="store_true", help="gzip rotated files")
    args = parser.parse_args(argv)
    shutil.rmtree(args.out, ignore_errors=True)
    args.out.mkdir(parents=True)

    start = time.perf_counter()
    public_path = build(args.out, args.records, args.max_size_mb, args.compress)
    build_seconds = time.perf_counter() - start
    live = args.out / "log" / "kerno-audit.jsonl"
    files = [*rotated_files(live), live]
    size = sum(p.stat().st_size for p in files)

    # Warm the page cache for both, so neither pays for the disk the other does not.
    subprocess.run(["cat", *map(str, files)], stdout=subprocess.DEVNULL, check=True)
    before = os.times()
    start = time.perf_counter()
    subprocess.run(["sha256sum", *map(str, files)], stdout=subprocess.DEVNULL, check=True)
    sha_seconds = time.perf_counter() - start
    sha_cpu = cpu_since(before)

    before = os.times()
    start = time.perf_counter()
    report = verify([live.parent], public_key=load_public(public_path))
    verify_seconds = time.perf_counter() - start
    verify_cpu = cpu_since(before)
    if not report.intact:
        print(f"verify found problems: {report.problems[:3]}", file=sys.stderr)
        return 1

    result = {
        "records": report.records,
        "files": len(files),
        "bytes": size,
        "checkpoints": report.checkpoints_checked,
        "build_seconds": round(build_seconds, 2),
        "verify_seconds": round(verify_seconds, 3),
        "verify_rps": round(report.records / verify_seconds),
        "sha256sum_seconds": round(sha_seconds, 3),
        "verify_cpu_seconds": round(verify_cpu, 3),
        "sha256sum_cpu_seconds": round(sha_cpu, 3),
        "ratio": round(sha_seconds / verify_seconds, 3),
    }
    print(
        f"verify: {result['verify_rps']:,} records/s over {size / 1e6:,.1f} MB in "
        f"{len(files)} files; sha256sum {sha_seconds:.3f}s vs verify {verify_seconds:.3f}s",
        file=sys.stderr,
    )
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
