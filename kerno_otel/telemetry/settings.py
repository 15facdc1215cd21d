"""Which exporters to build: the ``telemetry`` section over the standard ``OTEL_*`` variables.

The config file wins where it sets a key (an explicit setting beats ambient
environment, as for ``otlp``); a key left unset falls back to the variable
every OpenTelemetry SDK reads. Everything the exporters and the SDK configure
for themselves (endpoints and headers with their per-signal overrides,
timeouts, compression, certificates, ``OTEL_TRACES_SAMPLER``,
``OTEL_METRIC_EXPORT_INTERVAL``, ``OTEL_BSP_*``) is left to them: kerno-otel
does not read those variables a second time.

Unlike the SDK's own auto-configuration, both signals default to ``none``:
the daemon sends no spans or metrics anywhere unless asked.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from kerno_otel.config import ConfigError, parse_duration

TRACE_EXPORTERS: Final = ("otlp", "console", "none")
METRIC_EXPORTERS: Final = ("otlp", "console", "prometheus", "none")
PROTOCOLS: Final = ("grpc", "http/protobuf")
#: What the SDK's tracer provider reads from ``OTEL_TRACES_SAMPLER`` (anything else it
#: replaces with its default after a warning of its own, unprefixed: checked here instead).
SAMPLERS: Final = (
    "always_on",
    "always_off",
    "traceidratio",
    "parentbased_always_on",
    "parentbased_always_off",
    "parentbased_traceidratio",
)


@dataclass(frozen=True)
class TelemetrySettings:
    """The exporters to build, and where each choice came from (for error messages)."""

    traces: tuple[str, ...] = ()
    metrics: tuple[str, ...] = ()
    traces_protocol: str = "grpc"
    metrics_protocol: str = "grpc"
    #: ``telemetry.endpoint``; None leaves the endpoint to ``OTEL_EXPORTER_OTLP_*``.
    endpoint: str | None = None
    #: ``telemetry.metric_export_interval`` in ms; None leaves it to the SDK's variable;
    #: ``math.inf`` (a one-shot command, never the config): one export, at shutdown.
    interval_ms: float | None = None

    @property
    def tracing(self) -> bool:
        return bool(self.traces)


def _names(raw: Any, key: str, allowed: tuple[str, ...]) -> tuple[str, ...]:
    text = ",".join(raw) if isinstance(raw, list | tuple) else str(raw)
    names = [n.strip().lower() for n in text.split(",") if n.strip()]
    for name in names:
        if name not in allowed:
            raise ConfigError(f"{key}: unknown exporter {name!r} (known: {', '.join(allowed)})")
    return tuple(dict.fromkeys(n for n in names if n != "none"))


def _protocol(section: Mapping[str, Any], env: Mapping[str, str], signal: str) -> str:
    if section.get("protocol"):
        key, value = "telemetry.protocol", str(section["protocol"])
    else:
        key = f"OTEL_EXPORTER_OTLP_{signal}_PROTOCOL"
        value = env.get(key, "")
        if not value:
            key = "OTEL_EXPORTER_OTLP_PROTOCOL"
            # The Python SDK's "otlp" exporter speaks gRPC unless told otherwise.
            value = env.get(key, "grpc")
    value = value.strip().lower()
    if value not in PROTOCOLS:
        raise ConfigError(f"{key}: expected one of {', '.join(PROTOCOLS)}, got {value!r}")
    return value


def _check_sampler(env: Mapping[str, str]) -> None:
    """``OTEL_TRACES_SAMPLER(_ARG)`` as the SDK will read them, or ConfigError naming one."""
    sampler = env.get("OTEL_TRACES_SAMPLER", "").strip().lower() or "parentbased_always_on"
    if sampler not in SAMPLERS:
        raise ConfigError(
            f"OTEL_TRACES_SAMPLER: unknown sampler {sampler!r} (known: {', '.join(SAMPLERS)})"
        )
    arg = env.get("OTEL_TRACES_SAMPLER_ARG", "").strip()
    if sampler.endswith("traceidratio") and arg:
        try:
            ratio = float(arg)
        except ValueError:
            ratio = -1.0
        if not 0.0 <= ratio <= 1.0:
            raise ConfigError(f"OTEL_TRACES_SAMPLER_ARG: expected a ratio from 0 to 1, got {arg!r}")


def read_settings(section: Mapping[str, Any], env: Mapping[str, str]) -> TelemetrySettings:
    """The settings from the ``telemetry`` section and ``env``; ConfigError naming the key."""
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return TelemetrySettings()
    traces_raw = section.get("traces_exporter")
    traces_key = "telemetry.traces_exporter"
    if traces_raw is None:
        traces_raw, traces_key = env.get("OTEL_TRACES_EXPORTER", "none"), "OTEL_TRACES_EXPORTER"
    metrics_raw = section.get("metrics_exporter")
    metrics_key = "telemetry.metrics_exporter"
    if metrics_raw is None:
        metrics_raw = env.get("OTEL_METRICS_EXPORTER", "none")
        metrics_key = "OTEL_METRICS_EXPORTER"
    traces = _names(traces_raw, traces_key, TRACE_EXPORTERS)
    metrics = _names(metrics_raw, metrics_key, METRIC_EXPORTERS)
    if traces:
        _check_sampler(env)
    interval_ms: float | None = None
    if section.get("metric_export_interval") is not None:
        try:
            interval_ms = parse_duration(section["metric_export_interval"]) * 1000.0
        except ValueError as exc:
            raise ConfigError(f"telemetry.metric_export_interval: {exc}") from None
        if interval_ms <= 0:
            raise ConfigError("telemetry.metric_export_interval: expected a duration > 0")
    endpoint = section.get("endpoint")
    return TelemetrySettings(
        traces=traces,
        metrics=metrics,
        traces_protocol=_protocol(section, env, "TRACES") if "otlp" in traces else "grpc",
        metrics_protocol=_protocol(section, env, "METRICS") if "otlp" in metrics else "grpc",
        endpoint=str(endpoint) if endpoint else None,
        interval_ms=interval_ms,
    )
