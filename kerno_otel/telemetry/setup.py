"""Telemetry for one run of a command, on its audit log: ``kerno-otel run`` and ``doctor`` alike.

Both commands read their :class:`TelemetrySettings` before the audit log opens
(a bad ``OTEL_*`` variable or ``telemetry`` key is a config error, exit 2,
with nothing written), then call :func:`start_telemetry` once the log is
open: its resource and redactor are the spans' and metrics'. The daemon
exports metrics every ``OTEL_METRIC_EXPORT_INTERVAL``; a one-shot command
(``once=True``) exports them once, when :meth:`Telemetry.shutdown` flushes.
"""

from __future__ import annotations

import dataclasses
import math
from typing import TYPE_CHECKING, TextIO

from kerno_otel.config import ConfigError
from kerno_otel.telemetry.providers import Telemetry, build_telemetry
from kerno_otel.telemetry.settings import TelemetrySettings

if TYPE_CHECKING:
    from kerno_otel.audit.log import AuditLog


def start_telemetry(
    settings: TelemetrySettings,
    log: AuditLog,
    *,
    stderr: TextIO,
    serve_metrics: bool = False,
    once: bool = False,
) -> Telemetry:
    """The providers ``settings`` ask for, with ``log``'s resource; spans scrubbed by its redactor.

    ``serve_metrics``: the daemon's HTTP server reads the instruments for
    ``/metrics``. ``once``: a one-shot command, which serves nothing and
    exports its metrics once, at shutdown. Telemetry off (no exporter, nothing
    served) is :meth:`Telemetry.off`: no provider, no exporter, nothing said.
    Says on ``stderr`` what it exports. Raises ConfigError when an exporter
    refuses its ``OTEL_*`` settings.
    """
    if once:
        if "prometheus" in settings.metrics:
            stderr.write(
                "kerno-otel: telemetry: prometheus metrics are served on /metrics by "
                "kerno-otel run; this command serves nothing\n"
            )
        # No periodic export: the one export is the flush at shutdown.
        metrics = tuple(n for n in settings.metrics if n != "prometheus")
        settings = dataclasses.replace(settings, metrics=metrics, interval_ms=math.inf)
    if not (settings.traces or settings.metrics or serve_metrics):
        return Telemetry.off()

    def scrub(text: str) -> str:
        return log.redactor.redact_text(text)[0]

    try:
        telemetry = build_telemetry(
            settings,
            resource=log.resource,
            scrub=scrub,
            serve_metrics=serve_metrics,
            stats=log.stats,
        )
    except Exception as exc:  # an exporter refusing its OTEL_* settings
        raise ConfigError(f"telemetry: cannot set up the exporters: {exc}") from None
    # Said once at start, so an operator sees what the file and OTEL_* amounted to.
    for signal_name, names, protocol in (
        ("traces", settings.traces, settings.traces_protocol),
        ("metrics", settings.metrics, settings.metrics_protocol),
    ):
        if names:
            shown = ", ".join(f"{n} ({protocol})" if n == "otlp" else n for n in names)
            stderr.write(f"kerno-otel: telemetry: {signal_name} to {shown}\n")
    if "prometheus" in settings.metrics and not serve_metrics:
        stderr.write(
            "kerno-otel: telemetry: prometheus metrics are served on /metrics, "
            "but http.enabled is false: nothing serves them\n"
        )
    return telemetry
