"""Speed of ``audit query --type ai.call`` against ``jq -c 'select(.type=="ai.call")'``.

    python benchmarks/bench_query.py --records 1000000 --out /tmp/bench-query

Builds a log of N mixed events through ``AuditLog`` (rotation at --max-size-mb), then
runs, in the same run and over the same files, ``kerno-otel audit query --type ai.call
--nl`` (a fresh interpreter: start-up counted) and ``jq -c`` with the same filter,
each writing to a file; both must find the same number of records. CPU seconds of
each are printed too (wall time on a loaded machine says little). Files stay
uncompressed unless --compress (then jq reads through ``zcat -f``). The last line
printed is one JSON object; ``ratio`` is jq_seconds / query_seconds (goal: >= 2).
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from bench_verify import build

from kerno_otel.audit.files import rotated_files


def timed(command: list[str] | str, out: Path, shell: bool = False) -> tuple[float, float]:
    """(wall seconds, CPU seconds of the child processes) of one command."""
    with out.open("wb") as sink:
        before = os.times()
        start = time.perf_counter()
        subprocess.run(command, stdout=sink, check=False, shell=shell)
        wall = time.perf_counter() - start
        now = os.times()
        return wall, now.children_user - before.children_user + (
            now.children_system - before.children_system
        )


def count_lines(path: Path) -> int:
    """Lines of a file, a rotated ``.gz`` one decompressed."""
    with gzip.open(path, "rb") if path.name.endswith(".gz") else path.open("rb") as f:
        return sum(chunk.count(b"\n") for chunk in iter(lambda: f.read(1 << 20), b""))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=200_000)
    parser.add_argument("--out", type=Path, required=True, help="directory for the log (emptied)")
    parser.add_argument("--max-size-mb", type=float, default=100.0)
    parser.add_argument("--compress", action="store_true", help="gzip rotated files")
    args = parser.parse_args(argv)
    jq = shutil.which("jq")
    if jq is None:
        print("jq is not installed (scripts/setup-review.sh installs it)", file=sys.stderr)
        return 2
    shutil.rmtree(args.out, ignore_errors=True)
    args.out.mkdir(parents=True)

    start = time.perf_counter()
    build(args.out, args.records, args.max_size_mb, args.compress)
    build_seconds = time.perf_counter() - start
    live = args.out / "log" / "kerno-audit.jsonl"
    files = [*rotated_files(live), live]
    size = sum(p.stat().st_size for p in files)
    records = sum(count_lines(p) for p in files)

    # Warm the page cache for both, so neither pays for the disk the other does not.
    subprocess.run(["cat", *map(str, files)], stdout=subprocess.DEVNULL, check=True)
    jq_out, query_out = args.out / "jq.ndjson", args.out / "query.ndjson"
    program = 'select(.type=="ai.call")'
    if args.compress:
        names = " ".join(f"'{p}'" for p in files)
        jq_seconds, jq_cpu = timed(f"zcat -f {names} | {jq} -c '{program}'", jq_out, shell=True)
    else:
        jq_seconds, jq_cpu = timed([jq, "-c", program, *map(str, files)], jq_out)
    query = [sys.executable, "-m", "kerno_otel", "audit", "query", "--type", "ai.call", "--nl",
             "--silent", str(live.parent)]  # fmt: skip
    query_seconds, query_cpu = timed(query, query_out)
    matched, jq_matched = count_lines(query_out), count_lines(jq_out)
    if matched != jq_matched or matched == 0:
        print(f"query found {matched} records, jq {jq_matched}", file=sys.stderr)
        return 1
    total = records
    result = {
        "records": total,
        "files": len(files),
        "bytes": size,
        "matched": matched,
        "build_seconds": round(build_seconds, 2),
        "query_seconds": round(query_seconds, 3),
        "query_rps": round(total / query_seconds),
        "jq_seconds": round(jq_seconds, 3),
        "jq_rps": round(total / jq_seconds),
        "query_cpu_seconds": round(query_cpu, 3),
        "jq_cpu_seconds": round(jq_cpu, 3),
        "ratio": round(jq_seconds / query_seconds, 3),
    }
    print(
        f"query: {result['query_rps']:,} records/s over {size / 1e6:,.1f} MB in {len(files)} "
        f"files ({matched:,} matched); jq {jq_seconds:.3f}s vs query {query_seconds:.3f}s",
        file=sys.stderr,
    )
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
