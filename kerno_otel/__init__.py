"""kerno-otel: a compliance-grade audit log built on OpenTelemetry."""

from __future__ import annotations

__version__ = "0.1.0"

# Defined before the imports below: the modules read it.
from kerno_otel.audit.files import AuditFileError
from kerno_otel.audit.log import AuditLog
from kerno_otel.config.load import AuditConfig, CheckpointConfig, Config, ConfigError, load_config
from kerno_otel.hookspecs import hookimpl
from kerno_otel.records.catalogue import EventType
from kerno_otel.records.redact import RedactionRule

__all__ = [
    "AuditConfig",
    "AuditFileError",
    "AuditLog",
    "CheckpointConfig",
    "Config",
    "ConfigError",
    "EventType",
    "RedactionRule",
    "__version__",
    "hookimpl",
    "load_config",
]
