"""Throughput of the full audit pipeline against a plain standard-library logger, in one process.

    python benchmarks/bench_pipeline.py --records 200000 --out /tmp/bench [--config kerno.yaml]

The pipeline run emits N mixed events (every producer type of the catalogue,
with strings that need redaction) through ``AuditLog`` — OTel Logger, redact,
validate, seq, chain, encode, group-commit fsync — and flushes. With the
default ``audit.pipeline: process`` the stages after the Logger run in the
audit worker process; ``--pipeline thread`` runs them on the emitting thread. The baseline
writes the same events with ``logging`` + ``json.dumps`` + ``RotatingFileHandler``
(no redaction, no validation, one fsync at the end). The last line printed is
one JSON object; ``ratio`` is pipeline_rps / baseline_rps, and ``cpu_ratio`` the
CPU time per record of the pipeline (this process and the audit worker) over the
baseline's.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import logging
import logging.handlers
import os
import resource
import shutil
import sys
import time
from pathlib import Path

import orjson
from samples import sample_events

from kerno_otel.audit.log import AuditLog
from kerno_otel.config import AuditConfig, load_config


def _percentile(sorted_values: list[int], q: float) -> float:
    if not sorted_values:
        return 0.0
    index = min(len(sorted_values) - 1, round(q * (len(sorted_values) - 1)))
    return sorted_values[index] / 1000.0


def _cpu_seconds() -> float:
    """CPU time (user + system) of this process and of every child it has waited for."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def run_pipeline(events: list, config: AuditConfig) -> dict[str, float]:
    cpu_before = _cpu_seconds()  # the audit worker is waited for at close: counted below
    log = AuditLog(config, stderr=sys.stderr)
    emit = log.emit
    latencies = [0] * len(events)
    clock = time.perf_counter_ns
    gc.collect()
    start = time.perf_counter()
    for i, event in enumerate(events):
        t0 = clock()
        emit(event.type, actor=event.actor, details=event.details, outcome=event.outcome)
        latencies[i] = clock() - t0
    log.flush()
    elapsed = time.perf_counter() - start
    stats = log.stats()
    log.close()
    cpu = _cpu_seconds() - cpu_before
    latencies.sort()
    return {
        "elapsed": elapsed,
        "cpu": cpu,
        "emit_p50_us": _percentile(latencies, 0.50),
        "emit_p99_us": _percentile(latencies, 0.99),
        "emit_max_us": latencies[-1] / 1000.0 if latencies else 0.0,
        "fsyncs": stats["fsyncs"],
        "blocked_emits": stats["blocked_emits"],
        "validation_failures": stats["validation_failures"],
        "redactions": sum(stats["redactions"].values()),
    }


def run_baseline(events: list, directory: Path, max_bytes: int) -> tuple[float, float]:
    """(elapsed, CPU seconds) of the same events through a plain stdlib logger."""
    directory.mkdir(parents=True, exist_ok=True)
    handler = logging.handlers.RotatingFileHandler(
        directory / "baseline.jsonl", maxBytes=max_bytes, backupCount=100_000
    )
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger = logging.getLogger("kerno-bench-baseline")
    logger.propagate = False
    logger.handlers[:] = [handler]
    logger.setLevel(logging.INFO)
    resource = {"service.name": "kerno", "service.instance.id": "bench", "host.name": "bench"}
    gc.collect()
    cpu_before = _cpu_seconds()
    start = time.perf_counter()
    for seq, event in enumerate(events):
        ns = time.time_ns()
        logger.info(
            json.dumps(
                {
                    "v": "1",
                    "seq": seq,
                    "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ns // 10**9))
                    + f".{ns % 10**9:09d}Z",
                    "type": event.type,
                    "actor": event.actor,
                    "severity": "INFO",
                    "outcome": event.outcome,
                    "details": event.details,
                    "resource": resource,
                }
            )
        )
    handler.flush()
    os.fsync(handler.stream.fileno())
    elapsed = time.perf_counter() - start
    cpu = _cpu_seconds() - cpu_before
    handler.close()
    return elapsed, cpu


def count_written(directory: Path) -> tuple[int, int, int]:
    """(producer records, writer records, audit.loss count) across every file of the log."""
    import gzip

    producer = writer = losses = 0
    for path in sorted(directory.iterdir()):
        if not (path.name.endswith(".jsonl") or path.name.endswith(".jsonl.gz")):
            continue
        opener = gzip.open if path.name.endswith(".gz") else open
        with opener(path, "rb") as handle:
            for line in handle:
                record = orjson.loads(line)
                if record["actor"] == "audit/writer":
                    writer += 1
                    if record["type"] == "audit.loss":
                        losses += record["details"]["count"]
                else:
                    producer += 1
    return producer, writer, losses


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=200_000)
    parser.add_argument("--out", type=Path, required=True, help="directory for both runs' files")
    parser.add_argument(
        "--config", help="take the audit section from this file (the log still goes under --out)"
    )
    parser.add_argument("--keep", action="store_true", help="keep the previous contents of --out")
    parser.add_argument(
        "--pipeline",
        choices=("process", "thread"),
        help="audit.pipeline for the run (default: the config's, i.e. process)",
    )
    args = parser.parse_args(argv)

    out: Path = args.out
    if out.exists() and not args.keep:
        shutil.rmtree(out)
    pipeline_dir = out / "pipeline"
    audit = load_config(args.config).audit if args.config else AuditConfig(fsync="batch")
    audit = dataclasses.replace(audit, file_path=str(pipeline_dir / "kerno-audit.jsonl"))
    if args.pipeline:
        audit = dataclasses.replace(audit, pipeline=args.pipeline)
    events = sample_events(args.records)

    pipe = run_pipeline(events, audit)
    base_elapsed, base_cpu = run_baseline(
        events, out / "baseline", int(audit.max_size_mb * 1024 * 1024)
    )
    producer, writer, losses = count_written(pipeline_dir)

    pipeline_rps = args.records / pipe["elapsed"]
    baseline_rps = args.records / base_elapsed
    result = {
        "records": args.records,
        "written": producer,
        "writer_records": writer,
        "lost": args.records - producer,
        "loss_records_count": losses,
        "pipeline_rps": round(pipeline_rps),
        "baseline_rps": round(baseline_rps),
        "ratio": round(pipeline_rps / baseline_rps, 2),
        # CPU across every process (emitter and audit worker) per record, and its ratio.
        "cpu_us_per_record": round(pipe["cpu"] / args.records * 1e6, 2),
        "baseline_cpu_us_per_record": round(base_cpu / args.records * 1e6, 2),
        "cpu_ratio": round(pipe["cpu"] / base_cpu, 2),
        "emit_p50_us": round(pipe["emit_p50_us"], 2),
        "emit_p99_us": round(pipe["emit_p99_us"], 2),
        "emit_max_us": round(pipe["emit_max_us"], 1),
        "fsyncs": pipe["fsyncs"],
        "blocked_emits": pipe["blocked_emits"],
        "validation_failures": pipe["validation_failures"],
        "redactions": pipe["redactions"],
        "fsync": audit.fsync,
        "pipeline": audit.pipeline,
        "max_size_mb": audit.max_size_mb,
        "python": sys.version.split()[0],
        "cpus": os.cpu_count(),
    }
    print(
        f"pipeline {pipeline_rps:,.0f} rec/s, baseline {baseline_rps:,.0f} rec/s, "
        f"ratio {result['ratio']}x, emit p50 {result['emit_p50_us']} us, "
        f"p99 {result['emit_p99_us']} us, CPU {result['cpu_us_per_record']} us/record "
        f"({result['cpu_ratio']}x the baseline's)",
        file=sys.stderr,
    )
    print(json.dumps(result))
    return 0 if result["lost"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
