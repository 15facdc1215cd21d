"""What the daemon's own telemetry costs: emits inside spans, spans, a /metrics scrape.

    python benchmarks/bench_telemetry.py --records 100000 --out /tmp/bench-telemetry

Four runs of the same N mixed events (benchmarks/samples.py) through
``AuditLog`` (the config's pipeline, ``process`` by default), in one process:

- ``off``: telemetry off, as the daemon runs unless asked (the tracer is the
  API's no-op tracer);
- ``off_spans``: the same, each emit wrapped in a no-op span (what the doctor's
  and analyzer's span calls cost when telemetry is off);
- ``on_shared``: tracing on (SDK ``TracerProvider``, ``BatchSpanProcessor``, the
  span-redacting exporter over an exporter that drops what it is given), every
  emit inside one active span: the cost of taking the span's ids into records;
- ``on_per_record``: tracing on, one recorded span per emit (a worst case: the
  daemon's spans hold one to a few records each).

Then ``span_us`` (start, attributes, end and export of one span, alone) and
``scrape_ms`` (one ``/metrics`` rendering over every instrument, the pipeline's
stats included). The runs are interleaved and repeated (``--repeat``, 3) and
each mode's best run is kept, so a burst of load from elsewhere on a shared
machine hits one run, not one mode. Ratios are against ``off`` in the same
process; the last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from samples import sample_events

from kerno_otel.audit.log import AuditLog
from kerno_otel.config import AuditConfig, load_config
from kerno_otel.telemetry import Telemetry, build_telemetry, read_settings
from kerno_otel.telemetry.redact import RedactingSpanExporter


class _Drop(SpanExporter):
    """A collector that answers at once: only our side of the export is measured."""

    def __init__(self) -> None:
        self.spans = 0

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.spans += len(spans)
        return SpanExportResult.SUCCESS


def _tracing(log: AuditLog) -> tuple[TracerProvider, _Drop]:
    drop = _Drop()
    provider = TracerProvider(shutdown_on_exit=False)
    scrub: Callable[[str], str] = lambda text: log.redactor.redact_text(text)[0]  # noqa: E731
    provider.add_span_processor(BatchSpanProcessor(RedactingSpanExporter(drop, scrub)))
    return provider, drop


def run(events: list[Any], config: AuditConfig, mode: str) -> dict[str, float]:
    log = AuditLog(config, stderr=sys.stderr)
    provider, drop = _tracing(log)
    tracer = provider.get_tracer("bench") if mode.startswith("on") else Telemetry.off().tracer
    emit = log.emit
    gc.collect()
    start = time.perf_counter()
    if mode == "off":
        for event in events:
            emit(event.type, actor=event.actor, details=event.details, outcome=event.outcome)
    elif mode == "on_shared":
        with tracer.start_as_current_span("kerno.bench"):
            for event in events:
                emit(event.type, actor=event.actor, details=event.details, outcome=event.outcome)
    else:  # off_spans, on_per_record
        span = tracer.start_as_current_span
        for event in events:
            with span("kerno.bench", attributes={"kerno.bench.type": event.type}):
                emit(event.type, actor=event.actor, details=event.details, outcome=event.outcome)
    log.flush()
    elapsed = time.perf_counter() - start
    log.close()
    provider.shutdown()
    return {"elapsed": elapsed, "spans": drop.spans}


def span_cost(count: int, out: Path) -> float:
    """Microseconds per span started, given two attributes, ended and exported."""
    log = AuditLog(AuditConfig(file_path=str(out / "spans" / "a.jsonl"), pipeline="thread"))
    provider, _ = _tracing(log)
    tracer = provider.get_tracer("bench")
    gc.collect()
    start = time.perf_counter()
    for i in range(count):
        with tracer.start_as_current_span("kerno.doctor.rule") as span:
            span.set_attribute("kerno.doctor.rule", "oom_imminent")
            span.set_attribute("kerno.doctor.findings", i & 3)
    provider.force_flush()
    elapsed = time.perf_counter() - start
    provider.shutdown()
    log.close()
    return elapsed / count * 1e6


def scrape_cost(count: int, out: Path) -> float:
    """Milliseconds per /metrics rendering over every instrument."""
    log = AuditLog(AuditConfig(file_path=str(out / "scrape" / "a.jsonl")), stderr=sys.stderr)
    telemetry = build_telemetry(
        read_settings({}, {}),
        resource=log.resource,
        scrub=lambda text: text,
        serve_metrics=True,
        stats=log.stats,
    )
    telemetry.instruments.cycle_duration.record(1.0, {"kerno.doctor.outcome": "completed"})
    start = time.perf_counter()
    for _ in range(count):
        telemetry.prometheus_text()
    elapsed = time.perf_counter() - start
    telemetry.shutdown()
    log.close()
    return elapsed / count * 1000


#: The runs, in order; ratios are against the first.
MODES = ("off", "off_spans", "on_shared", "on_per_record")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--out", type=Path, required=True, help="directory for the runs' logs")
    parser.add_argument("--config", help="take the audit section from this file")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each mode (best kept)")
    parser.add_argument(
        "--pipeline", choices=("process", "thread"), help="audit.pipeline (default: process)"
    )
    args = parser.parse_args(argv)
    out: Path = args.out
    if out.exists():
        shutil.rmtree(out)
    base = load_config(args.config).audit if args.config else AuditConfig(fsync="batch")
    if args.pipeline:
        base = dataclasses.replace(base, pipeline=args.pipeline)
    events = sample_events(args.records)
    result: dict[str, Any] = {"records": args.records, "pipeline": base.pipeline}
    rps: dict[str, float] = dict.fromkeys(MODES, 0.0)
    for attempt in range(max(1, args.repeat)):
        for mode in MODES:
            directory = out / mode
            if directory.exists():
                shutil.rmtree(directory)  # each run starts a fresh stream
            config = dataclasses.replace(base, file_path=str(directory / "kerno-audit.jsonl"))
            got = run(events, config, mode)
            now = args.records / got["elapsed"]
            rps[mode] = max(rps[mode], now)
            print(
                f"run {attempt + 1} {mode:>14}: {now:>10,.0f} records/s, "
                f"{got['spans']:,} spans exported"
            )
    for mode in MODES:
        result[f"{mode}_rps"] = round(rps[mode])
    for mode in ("off_spans", "on_shared", "on_per_record"):
        result[f"{mode}_ratio"] = round(rps[mode] / rps["off"], 3)
    result["span_us"] = round(span_cost(max(1000, args.records // 10), out), 2)
    result["scrape_ms"] = round(scrape_cost(50, out), 3)
    print(f"span: {result['span_us']} µs; /metrics scrape: {result['scrape_ms']} ms")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
