"""The sections besides ``audit`` (``otlp``, ``http``, ``doctor``, …): their defaults and checks.

A key's type is its default's. A plugin's own section is not checked here: the
plugin checks it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Final

from kerno_otel.config.values import (
    NUMBERS,
    ConfigError,
    Where,
    check_number,
    env_value,
    number,
)

#: The other config sections with their embedded defaults. A key's type is
#: its default's (None: a string or nothing); unknown keys are refused.
SECTION_DEFAULTS: Final[dict[str, dict[str, Any]]] = {
    "otlp": {
        "enabled": False,
        # None: OTEL_EXPORTER_OTLP_(LOGS_)ENDPOINT, else loopback (kerno_otel/forward/options.py).
        "endpoint": None,
        "protocol": "grpc",
        "headers": {},
        "timeout": "10s",
        "compression": None,
        "certificate_file": None,
        "client_key_file": None,
        "client_certificate_file": None,
        "batch_size": 512,
    },
    "plugins": {"enabled": None, "disabled": [], "strict": False},
    "http": {
        "enabled": True,
        "listen": "127.0.0.1:9090",
        "bearer_token": None,
        "bearer_token_file": None,
        "tls_cert_file": None,
        "tls_key_file": None,
        "client_ca_file": None,
    },
    "doctor": {
        "duration": "30s",
        "interval": "60s",
        "sinks": ["log"],
        "thresholds": {
            "syscall_p99_warning_ns": 100_000_000,
            "syscall_p99_critical_ns": 500_000_000,
            "tcp_retransmit_pct": 2.0,
            "oom_memory_pct": 90.0,
            "disk_p99_warning_ns": 50_000_000,
            "disk_p99_critical_ns": 200_000_000,
            "sched_delay_warning_ns": 5_000_000,
            "sched_delay_critical_ns": 20_000_000,
            "fd_growth_per_sec": 10.0,
        },
    },
    "ai": {
        "enabled": False,
        "provider": None,
        "model": None,
        "api_key": None,
        "endpoint": None,
        "max_tokens": 1024,
        "temperature": 0.2,
        "cache_ttl": "5m",
        "rate_limit_per_minute": 10,
        "privacy_mode": "summary",
        "proxy": None,
        "ca_cert_file": None,
        "timeout": "30s",
    },
    # The daemon's own traces and metrics (docs/telemetry.md). None: the standard
    # OTEL_* variable decides (OTEL_TRACES_EXPORTER, OTEL_METRICS_EXPORTER, …).
    "telemetry": {
        "traces_exporter": None,
        "metrics_exporter": None,
        "endpoint": None,
        "protocol": None,
        "metric_export_interval": None,
    },
    "bpf": {
        "enabled": True,
        "programs": [
            "syscall_latency",
            "tcp_monitor",
            "disk_io",
            "sched_delay",
            "fd_track",
            "oom_track",
        ],
    },
}

_SECTION_CHOICES: Final[dict[str, tuple[Any, ...]]] = {
    "otlp.protocol": ("grpc", "http"),
    "otlp.compression": (None, "gzip"),
    "ai.privacy_mode": ("full", "redacted", "summary"),
    "telemetry.protocol": (None, "grpc", "http/protobuf"),
}
_SECTION_DURATIONS: Final = frozenset(
    {
        "otlp.timeout",
        "doctor.duration",
        "doctor.interval",
        "ai.cache_ttl",
        "ai.timeout",
        "telemetry.metric_export_interval",
    }
)

# ai.provider is any name: anthropic, openai, ollama, or one a plugin registers
# (the analyzer checks it when it builds the provider).


_THRESHOLD_NAME = re.compile(r"[a-z][a-z0-9_]{0,63}")


def copy_defaults(value: Any) -> Any:
    """A copy of a section's defaults that the caller may change (nested dicts, lists)."""
    if isinstance(value, dict):
        return {k: copy_defaults(v) for k, v in value.items()}
    if isinstance(value, list):
        return list(value)
    return value


def apply_section_env(raw: dict[str, Any], env: Mapping[str, str], sources: dict[str, str]) -> None:
    """``KERNO_HTTP_LISTEN=…`` and the like, for the sections of :data:`SECTION_DEFAULTS`.

    ``KERNO_CONFIG``, ``KERNO_AUDIT_*`` and ``KERNO_OTEL_*`` (the plugin
    allow-list, debug switch) are not section keys.
    """
    for var, text in env.items():
        if not var.startswith("KERNO_") or var.startswith(("KERNO_AUDIT_", "KERNO_OTEL_")):
            continue
        if var == "KERNO_CONFIG":
            continue
        rest = var[len("KERNO_") :].lower()
        section = next((n for n in SECTION_DEFAULTS if rest.startswith(n + "_")), None)
        if section is None:
            continue  # a plugin's section, or not ours: plugins read their own env
        key = rest[len(section) + 1 :]
        if key not in SECTION_DEFAULTS[section]:
            raise ConfigError(f"{var}: unknown {section} key {key!r}")
        raw.setdefault(section, {})
        if not isinstance(raw[section], dict):
            raw[section] = {}
        raw[section][key] = env_value(text)
        sources[f"{section}.{key}"] = var


def check_section(name: str, value: Mapping[str, Any], where: Where) -> dict[str, Any]:
    """Section ``name``: its defaults from :data:`SECTION_DEFAULTS`, ``value`` checked over them."""
    defaults = SECTION_DEFAULTS[name]
    out: dict[str, Any] = copy_defaults(defaults)
    for key, item in value.items():
        dotted = f"{name}.{key}"
        if key not in defaults:
            raise ConfigError(
                f"{where(dotted)}: unknown key (known: {', '.join(sorted(defaults))})"
            )
        try:
            out[key] = _check_value(dotted, defaults[key], item, where)
        except ConfigError:
            raise
        except ValueError as exc:
            raise ConfigError(f"{where(dotted)}: {exc}") from None
    return out


def _check_value(dotted: str, default: Any, value: Any, where: Where) -> Any:
    if dotted in _SECTION_CHOICES:
        if value not in _SECTION_CHOICES[dotted]:
            shown = ", ".join(str(c) for c in _SECTION_CHOICES[dotted] if c is not None)
            raise ValueError(f"expected one of {shown}, got {value!r}")
        return value
    if dotted in _SECTION_DURATIONS and value is None and default is None:
        return None  # unset: the standard OTEL_* variable or the SDK decides
    if dotted in NUMBERS:
        # Durations keep the text the file gave ("30s"): their readers parse it.
        amount = check_number(dotted, value)
        return value if dotted in _SECTION_DURATIONS else amount
    if dotted == "http.listen":
        return _listen(value)
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise ValueError("expected true or false")
        return value
    if isinstance(default, int | float) and not isinstance(default, bool):  # pragma: no cover
        raise AssertionError(f"{dotted}: a numeric key missing from config.values.NUMBERS")
    if isinstance(default, list) or (dotted == "plugins.enabled"):
        if value is None and dotted == "plugins.enabled":
            return None
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ValueError("expected a list of names")
        return value
    if isinstance(default, dict):
        if not isinstance(value, dict):
            raise ValueError("expected a mapping")
        if dotted == "doctor.thresholds":
            # Keys beyond kerno's may be thresholds a plugin rule declares: they are
            # checked against the loaded rules when the doctor is built
            # (kerno_otel/doctor/thresholds.py).
            out = dict(default)
            for key, item in value.items():
                if not isinstance(key, str) or not _THRESHOLD_NAME.fullmatch(key):
                    raise ValueError(f"threshold name {key!r} must match {_THRESHOLD_NAME.pattern}")
                name = f"{dotted}.{key}"
                try:
                    # kerno's own thresholds have a range; a plugin's any finite number >= 0.
                    own = name in NUMBERS
                    out[key] = check_number(name, item) if own else _plugin_threshold(item)
                except ValueError as exc:
                    raise ConfigError(f"{where(name)}: {exc}") from None
            return out
        return {str(k): str(v) for k, v in value.items()}
    if value is not None and not isinstance(value, str):
        raise ValueError(f"expected a string, got {type(value).__name__}")
    return value


def _plugin_threshold(value: Any) -> float:
    """A threshold a plugin rule declares: any finite number, not negative."""
    if number(value) < 0:
        raise ValueError(f"expected a number >= 0, got {value!r}")
    return float(value)


def _listen(value: Any) -> str:
    """``host:port`` (``[v6]:port``) with a port from 0 (any free one) to 65535."""
    if not isinstance(value, str):
        raise ValueError(f"expected host:port, got {type(value).__name__}")
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ValueError(f"expected host:port, got {value!r}")
    if int(port) > 65535:
        raise ValueError(f"port {int(port)} out of range (0-65535) in {value!r}")
    return value
