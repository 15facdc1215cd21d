"""Records/s the OTLP forwarder delivers, against the OTel SDK's batch processor, in one run.

    python benchmarks/bench_forward.py --records 100000

A loopback OTLP/gRPC receiver runs in another process (two ports, one per
sender, each counting the log records it acknowledged). The log of N mixed
events is built first through ``AuditLog`` (untimed: the files are the
forwarder's input). Then, timed:

- forwarder: ``Forwarder`` with the default ``otlp`` settings (batch 512, gRPC)
  from an empty cursor until the receiver holds every line of the log;
- SDK: the same records (parsed from the same lines beforehand) emitted through
  a ``LoggerProvider`` with ``BatchLogRecordProcessor(OTLPLogExporter())`` at
  default settings, timed from the first emit to the end of ``shutdown()``
  (which flushes); its queue drops records when full, which ``sdk_lost`` counts.

``*_rps`` are records the receiver got per second; ``ratio`` is
forwarder_rps / sdk_rps. The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import io
import json
import multiprocessing
import shutil
import sys
import tempfile
import time
from concurrent import futures
from multiprocessing.sharedctypes import Synchronized
from pathlib import Path
from typing import Any

import orjson
from samples import sample_events

from kerno_otel.audit.chain import parse_ts
from kerno_otel.audit.files import rotated_files
from kerno_otel.audit.log import AuditLog
from kerno_otel.config import AuditConfig
from kerno_otel.forward.forwarder import Forwarder, ForwarderOptions

_BATCH = 100_000


def serve(ports: Any, counters: list[Synchronized[int]], stop: Any) -> None:
    """The receiver process: one gRPC server per counter on 127.0.0.1."""
    import grpc
    from opentelemetry.proto.collector.logs.v1 import logs_service_pb2_grpc
    from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceResponse

    servers = []
    for counter in counters:

        class Servicer(logs_service_pb2_grpc.LogsServiceServicer):
            def __init__(self, counter: Synchronized[int]) -> None:
                self.counter = counter

            def Export(self, request: Any, context: Any) -> Any:
                n = sum(len(s.log_records) for r in request.resource_logs for s in r.scope_logs)
                with self.counter.get_lock():
                    self.counter.value += n
                return ExportLogsServiceResponse()

        server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=4),
            options=[("grpc.max_receive_message_length", 64 * 1024 * 1024)],
        )
        logs_service_pb2_grpc.add_LogsServiceServicer_to_server(Servicer(counter), server)
        ports.put(server.add_insecure_port("127.0.0.1:0"))
        server.start()
        servers.append(server)
    stop.wait()
    for server in servers:
        server.stop(None)


def build(live: Path, records: int) -> list[bytes]:
    with AuditLog(AuditConfig(file_path=str(live), max_size_mb=20), stderr=sys.stderr) as log:
        done = 0
        while done < records:
            for ev in sample_events(min(_BATCH, records - done), seed=done + 1):
                log.emit(ev.type, actor=ev.actor, details=ev.details, outcome=ev.outcome)
            done += _BATCH
    lines: list[bytes] = []
    for path in [*rotated_files(live), live]:
        lines.extend(path.read_bytes().splitlines())
    return lines


def wait_count(counter: Synchronized[int], target: int, timeout: float) -> float:
    """Wait until ``counter`` reaches ``target`` (or stops moving for 2 s); the time it did."""
    deadline = time.monotonic() + timeout
    last, last_change = counter.value, time.monotonic()
    while counter.value < target and time.monotonic() < deadline:
        time.sleep(0.002)
        value = counter.value
        if value != last:
            last, last_change = value, time.monotonic()
        elif time.monotonic() - last_change > 2.0:
            return last_change
    return time.monotonic()


def run_forwarder(live: Path, port: int, counter: Synchronized[int], total: int) -> float:
    options = ForwarderOptions.from_section(
        {"endpoint": f"http://127.0.0.1:{port}", "batch_size": 512}
    )
    forwarder = Forwarder(live, options, stderr=sys.stderr)
    started = time.monotonic()
    forwarder.start()
    done = wait_count(counter, total, timeout=600)
    forwarder.stop()
    return done - started


def run_sdk(lines: list[bytes], port: int, counter: Synchronized[int]) -> float:
    from opentelemetry._logs import LogRecord, SeverityNumber
    from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter
    from opentelemetry.sdk._logs import LoggerProvider
    from opentelemetry.sdk._logs.export import BatchLogRecordProcessor
    from opentelemetry.sdk.resources import Resource

    records = [orjson.loads(line) for line in lines]
    provider = LoggerProvider(resource=Resource(records[0]["resource"]), shutdown_on_exit=False)
    exporter = OTLPLogExporter(endpoint=f"http://127.0.0.1:{port}", insecure=True)
    provider.add_log_record_processor(BatchLogRecordProcessor(exporter))
    logger = provider.get_logger("kerno_otel.audit")
    prepared = [
        (
            parse_ts(r["ts"]),
            r["type"],
            r["severity"],
            SeverityNumber[r["severity"]],
            {f"kerno.audit.{k}": r[k] for k in ("v", "seq", "actor", "outcome", "details", "prev")},
        )
        for r in records
    ]
    started = time.monotonic()
    for ts, type_name, text, number, attributes in prepared:
        logger.emit(
            LogRecord(
                timestamp=ts,
                event_name=type_name,
                severity_text=text,
                severity_number=number,
                attributes=attributes,
            )
        )
    provider.shutdown()  # flushes what the queue kept
    done = wait_count(counter, len(lines), timeout=5)
    return max(done - started, 1e-9)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--out", type=Path, help="directory for the log (default: a temp dir)")
    args = parser.parse_args(argv)
    out = args.out or Path(tempfile.mkdtemp(prefix="bench-forward-"))
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    live = out / "kerno-audit.jsonl"
    lines = build(live, args.records)
    total = len(lines)

    ctx = multiprocessing.get_context("spawn")
    counters = [ctx.Value("q", 0), ctx.Value("q", 0)]
    ports = ctx.Queue()
    stop = ctx.Event()
    receiver = ctx.Process(target=serve, args=(ports, counters, stop), daemon=True)
    receiver.start()
    forwarder_port, sdk_port = ports.get(timeout=60), ports.get(timeout=60)
    try:
        forwarder_s = run_forwarder(live, forwarder_port, counters[0], total)
        forwarder_received = int(counters[0].value)
        sdk_s = run_sdk(lines, sdk_port, counters[1])
        sdk_received = int(counters[1].value)
    finally:
        stop.set()
        receiver.join(10)
        if args.out is None:
            shutil.rmtree(out, ignore_errors=True)
    forwarder_rps = forwarder_received / forwarder_s if forwarder_s > 0 else 0.0
    sdk_rps = sdk_received / sdk_s if sdk_s > 0 else 0.0
    report = io.StringIO()
    report.write(
        f"forwarder: {forwarder_received}/{total} records in {forwarder_s:.2f} s "
        f"({forwarder_rps:,.0f}/s)\n"
        f"sdk batch: {sdk_received}/{total} records in {sdk_s:.2f} s ({sdk_rps:,.0f}/s), "
        f"lost {total - sdk_received}\n"
    )
    sys.stderr.write(report.getvalue())
    print(
        json.dumps(
            {
                "records": total,
                "forwarder_rps": round(forwarder_rps, 1),
                "forwarder_received": forwarder_received,
                "sdk_rps": round(sdk_rps, 1),
                "sdk_received": sdk_received,
                "sdk_lost": total - sdk_received,
                "ratio": round(forwarder_rps / sdk_rps, 3) if sdk_rps else None,
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
