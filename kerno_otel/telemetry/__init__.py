"""kerno-otel's own traces and metrics: providers from ``OTEL_*`` and the ``telemetry`` section.

See docs/telemetry.md for the span and metric catalogue.
"""

from __future__ import annotations

from kerno_otel.telemetry.providers import (
    PROMETHEUS_CONTENT_TYPE,
    Telemetry,
    build_telemetry,
)
from kerno_otel.telemetry.settings import TelemetrySettings, read_settings
from kerno_otel.telemetry.setup import start_telemetry

__all__ = [
    "PROMETHEUS_CONTENT_TYPE",
    "Telemetry",
    "TelemetrySettings",
    "build_telemetry",
    "read_settings",
    "start_telemetry",
]
