"""The daemon's tracer and meter providers, and :class:`Telemetry`, what plugins are handed.

Off unless asked: with no trace exporter the tracer is the API's no-op
tracer (a span costs a function call and nothing is kept); the meter
provider exists only when something reads it (``/metrics`` on the daemon's
HTTP server, or a metrics exporter). The providers are the daemon's own,
never the process-global ones, and carry the audit log's resource, so a
span, a metric point and an audit record of one process name the same
``service.name``, ``service.instance.id`` and ``host.name``.
"""

from __future__ import annotations

import contextlib
import logging
import math
import re
import sys
import threading
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Final

from opentelemetry import metrics as metrics_api
from opentelemetry import trace as trace_api

from kerno_otel import __version__
from kerno_otel.telemetry.instruments import Instruments
from kerno_otel.telemetry.meter import ScrubbingMeter
from kerno_otel.telemetry.settings import TelemetrySettings

if TYPE_CHECKING:
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import MetricReader
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter
    from prometheus_client import CollectorRegistry

    from kerno_otel.records.redact import Redactor

#: Instrumentation scope of the core's spans and instruments.
SCOPE: Final = "kerno_otel"
#: Content type of :meth:`Telemetry.prometheus_text`.
PROMETHEUS_CONTENT_TYPE: Final = "text/plain; version=0.0.4; charset=utf-8"
#: Seconds :meth:`Telemetry.shutdown` waits for the last exports, at most. The OTLP
#: exporters give up on a collector that is down after ``OTEL_EXPORTER_OTLP_TIMEOUT``
#: (10 s by default); traces and metrics shut down side by side, so a command ends
#: about that long after its work, and never more than this, whatever the timeout says.
SHUTDOWN_S: Final = 15.0


class Telemetry:
    """The daemon's tracer, meter and instruments (``DaemonContext.telemetry``).

    ``tracer`` and ``meter`` are OpenTelemetry API objects: plugins start spans
    (``with telemetry.tracer.start_as_current_span("acme.export"): ...``) and
    create instruments on ``meter`` as with any OpenTelemetry SDK. Audit
    records emitted inside a span carry its ``trace_id``/``span_id``.
    """

    def __init__(
        self,
        *,
        tracer_provider: TracerProvider | None = None,
        meter_provider: MeterProvider | None = None,
        registry: CollectorRegistry | None = None,
        scrub: Callable[[str], str] | None = None,
        flush_metrics: bool = False,
    ) -> None:
        self._tracer_provider = tracer_provider
        self._meter_provider = meter_provider
        #: Collect and export the metrics at shutdown (readers with no periodic export,
        #: a one-shot command's).
        self._flush_metrics = flush_metrics
        self._registry = registry
        self.tracer: trace_api.Tracer = (
            tracer_provider.get_tracer(SCOPE, __version__)
            if tracer_provider is not None
            else trace_api.NoOpTracer()
        )
        self.meter: metrics_api.Meter = (
            meter_provider.get_meter(SCOPE, __version__)
            if meter_provider is not None
            else metrics_api.NoOpMeter(SCOPE)
        )
        if scrub is not None and meter_provider is not None:
            # Metric attributes leave on every export and scrape: cleaned like spans.
            self.meter = ScrubbingMeter(self.meter, scrub)
        self.instruments = Instruments(self.meter)
        self._closed = False

    @classmethod
    def off(cls) -> Telemetry:
        """No spans, no metrics: every call is a no-op."""
        return cls()

    @property
    def tracing(self) -> bool:
        """Whether spans go anywhere (False: the tracer is a no-op)."""
        return self._tracer_provider is not None

    def observe_bpf_lost(self, program: str, read: Callable[[], int]) -> None:
        """Export a loaded BPF program's lost events (``read()``, a running total) as
        ``kerno.bpf.lost_events`` (attribute ``kerno.bpf.program``). The core's BPF loader
        does this for every program registered through ``register_bpf_programs``."""
        self.instruments.observe_bpf_lost(program, read)

    def prometheus_text(self) -> bytes | None:
        """The instruments in Prometheus text format, or None when no reader is set up."""
        if self._registry is None:
            return None
        from prometheus_client import generate_latest

        return generate_latest(self._registry)

    def shutdown(self, timeout: float = SHUTDOWN_S) -> None:
        """Export what is pending and stop the exporters. Safe twice; never raises.

        Traces and metrics are shut down side by side, and this returns after
        ``timeout`` seconds at most: an export still retrying then (a collector
        that is down or does not answer) is left to its daemon thread, and is
        lost if the process exits.
        """
        if self._closed:
            return
        self._closed = True
        steps: list[Callable[[], object]] = []
        if self._tracer_provider is not None:
            steps.append(self._tracer_provider.shutdown)
        if self._meter_provider is not None:
            steps.append(self._shutdown_metrics)
        threads = [
            threading.Thread(
                target=_quietly, args=(step,), name="kerno-telemetry-stop", daemon=True
            )
            for step in steps
        ]
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + timeout
        for thread in threads:
            thread.join(max(deadline - time.monotonic(), 0.0))
        if any(thread.is_alive() for thread in threads):
            with contextlib.suppress(Exception):
                sys.stderr.write(
                    f"kerno-otel: telemetry: stopped waiting for the last export after "
                    f"{timeout:g} s: spans or metrics not sent by then are lost\n"
                )

    def _shutdown_metrics(self) -> None:
        provider = self._meter_provider
        assert provider is not None
        if self._flush_metrics:
            with contextlib.suppress(Exception):
                provider.force_flush()
        provider.shutdown()


def _quietly(step: Callable[[], object]) -> None:
    with contextlib.suppress(Exception):
        step()


#: ``user:password@`` before a host, with or without a scheme (the gRPC exporter says its
#: endpoint as ``bob:hunter2@10.0.0.5:4317``, which no URL rule sees).
_USERINFO: Final = re.compile(r"(?<![\w.%+-])[\w.%+~-]+:[^\s/@'\"]+@(?=[\w.\[])")


def scrub_exporter_message(text: str) -> str:
    """An exporter's log line as it may reach stderr: credentials, addresses and paths out."""
    from kerno_otel.records.redact import Redactor

    if not _EXPORTER_REDACTOR:
        _EXPORTER_REDACTOR.append(Redactor())  # the default rules: a global handler has no config
    return _EXPORTER_REDACTOR[0].redact_text(_USERINFO.sub("[REDACTED:secret]@", text))[0]


#: Made at the first warning (importing the redaction rules costs a start that never warns).
_EXPORTER_REDACTOR: Final[list[Redactor]] = []


class _Prefixed(logging.Handler):
    """The exporters' own log lines (a collector that is down, say), said as ours, scrubbed:
    they quote the endpoint, credentials in it included, and the collector's address."""

    def emit(self, record: logging.LogRecord) -> None:
        with contextlib.suppress(Exception):
            line = scrub_exporter_message(record.getMessage())
            sys.stderr.write(f"kerno-otel: telemetry: {line}\n")


def _prefix_exporter_logs() -> None:
    """Once per process: the SDK's exporter warnings reach stderr prefixed, not raw."""
    logger = logging.getLogger("opentelemetry.exporter")
    if not any(isinstance(h, _Prefixed) for h in logger.handlers):
        logger.addHandler(_Prefixed(logging.WARNING))
        logger.propagate = False


def _span_exporter(name: str, settings: TelemetrySettings) -> SpanExporter:
    if name == "console":
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter

        # On stderr: stdout is a command's output (doctor -o json), not to be mixed with spans.
        return ConsoleSpanExporter(out=sys.stderr)
    endpoint = settings.endpoint
    if settings.traces_protocol == "http/protobuf":
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
            OTLPSpanExporter as HttpSpanExporter,
        )

        url = endpoint.rstrip("/") + "/v1/traces" if endpoint else None
        return HttpSpanExporter(endpoint=url)
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

    return OTLPSpanExporter(endpoint=endpoint)


def _metric_reader(name: str, settings: TelemetrySettings) -> MetricReader:
    from opentelemetry.sdk.metrics.export import (
        ConsoleMetricExporter,
        MetricExporter,
        PeriodicExportingMetricReader,
    )

    exporter: MetricExporter
    endpoint = settings.endpoint
    if name == "console":
        exporter = ConsoleMetricExporter(out=sys.stderr)  # as the spans: stdout is the output
    elif settings.metrics_protocol == "http/protobuf":
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import (
            OTLPMetricExporter as HttpMetricExporter,
        )

        url = endpoint.rstrip("/") + "/v1/metrics" if endpoint else None
        exporter = HttpMetricExporter(endpoint=url)
    else:
        from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter

        exporter = OTLPMetricExporter(endpoint=endpoint)
    return PeriodicExportingMetricReader(exporter, export_interval_millis=settings.interval_ms)


def build_telemetry(
    settings: TelemetrySettings,
    *,
    resource: Mapping[str, str],
    scrub: Callable[[str], str],
    serve_metrics: bool,
    stats: Callable[[], Mapping[str, Any]] | None = None,
) -> Telemetry:
    """The daemon's :class:`Telemetry` for ``settings``.

    ``resource`` is the audit log's; ``scrub`` its redactor's free-text
    cleaner, applied to every span on the way out; ``serve_metrics`` adds a
    Prometheus reader for the HTTP server's ``/metrics``; ``stats`` feeds the
    audit pipeline's observable instruments.
    """
    from opentelemetry.sdk.resources import Resource

    from kerno_otel.telemetry.redact import clean_attributes

    # Resource.create adds OTEL_RESOURCE_ATTRIBUTES, the SDK's own attributes and what the
    # detectors OTEL_EXPERIMENTAL_RESOURCE_DETECTORS names find (``process``: the pid, the
    # parent's, the executable's path, the command line). They leave with every span and
    # metric point, so they are scrubbed like span attributes; the audit log's three keys
    # win over them, exact, so the records and spans agree.
    created = Resource.create(dict(resource))
    otel_resource = Resource(
        {**clean_attributes(scrub, created.attributes), **resource}, created.schema_url
    )
    if settings.traces or settings.metrics:
        _prefix_exporter_logs()
    tracer_provider = None
    if settings.tracing:
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        from kerno_otel.telemetry.redact import RedactingSpanExporter

        # No sampler given: the SDK reads OTEL_TRACES_SAMPLER(_ARG) itself.
        tracer_provider = TracerProvider(resource=otel_resource, shutdown_on_exit=False)
        for name in settings.traces:
            exporter = RedactingSpanExporter(_span_exporter(name, settings), scrub)
            tracer_provider.add_span_processor(BatchSpanProcessor(exporter))
    readers: list[MetricReader] = [
        _metric_reader(n, settings) for n in settings.metrics if n != "prometheus"
    ]
    registry = None
    if serve_metrics or "prometheus" in settings.metrics:
        from opentelemetry.exporter.prometheus import PrometheusMetricReader
        from prometheus_client import CollectorRegistry

        # A registry of our own, not prometheus_client's global one: two daemons in
        # one process (tests, embedding) must not see each other's instruments.
        registry = CollectorRegistry(auto_describe=True)
        readers.append(PrometheusMetricReader(registry=registry))
    meter_provider = None
    if readers:
        from opentelemetry.sdk.metrics import MeterProvider

        meter_provider = MeterProvider(
            metric_readers=readers, resource=otel_resource, shutdown_on_exit=False
        )
    telemetry = Telemetry(
        tracer_provider=tracer_provider,
        meter_provider=meter_provider,
        registry=registry,
        scrub=scrub,
        # No periodic export (interval math.inf): the one export is at shutdown.
        flush_metrics=settings.interval_ms == math.inf,
    )
    if stats is not None and meter_provider is not None:
        telemetry.instruments.observe_pipeline(stats)
    return telemetry
