"""kerno-otel: a compliance-grade audit log built on OpenTelemetry.

The public API is what ``__all__`` lists, plus two public modules:
:mod:`kerno_otel.hookspecs` (the hooks, ``DaemonContext``, ``Route``,
``ConfigDiff``) and :mod:`kerno_otel.findings` (what the doctor and the
analyzer exchange). Plugins, first-party ones included, use nothing else.
"""

from __future__ import annotations

__version__ = "0.1.0"

import importlib as _importlib
import typing as _typing

# Defined before the imports below: the modules read it.
from kerno_otel.audit.files import AuditFileError
from kerno_otel.audit.log import AuditLog
from kerno_otel.config import (
    AuditConfig,
    CheckpointConfig,
    Config,
    ConfigError,
    load_config,
    parse_duration,
)
from kerno_otel.contract import (
    AIProvider,
    BPFProgram,
    BPFStats,
    BPFUnavailable,
    PluginInfo,
    ProviderError,
    Rule,
    RuleInput,
    Sink,
    SinkFactory,
    Source,
    SourceFactory,
)
from kerno_otel.findings import Analysis, Analyzer, Finding, Signals
from kerno_otel.hookspecs import hookimpl
from kerno_otel.records.catalogue import EventType
from kerno_otel.records.redact import RedactionRule

if _typing.TYPE_CHECKING:
    from kerno_otel.daemon.failure_fold import FailureFold
    from kerno_otel.doctor.engine import CycleResult, Doctor, build_doctor
    from kerno_otel.forward.forwarder import Forwarder, ForwarderOptions
    from kerno_otel.telemetry import Telemetry

#: Names imported on first use: the audit worker's processes import this package
#: and need neither the doctor nor the forwarder (its protobuf import is ~20 ms of CPU).
_LAZY = {
    "CycleResult": "kerno_otel.doctor.engine",
    "Doctor": "kerno_otel.doctor.engine",
    "build_doctor": "kerno_otel.doctor.engine",
    "FailureFold": "kerno_otel.daemon.failure_fold",
    "Forwarder": "kerno_otel.forward.forwarder",
    "ForwarderOptions": "kerno_otel.forward.forwarder",
    "Telemetry": "kerno_otel.telemetry",
}


def __getattr__(name: str) -> _typing.Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(_importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})


__all__ = [
    "AIProvider",
    "Analysis",
    "Analyzer",
    "AuditConfig",
    "AuditFileError",
    "AuditLog",
    "BPFProgram",
    "BPFStats",
    "BPFUnavailable",
    "CheckpointConfig",
    "Config",
    "ConfigError",
    "CycleResult",
    "Doctor",
    "EventType",
    "FailureFold",
    "Finding",
    "Forwarder",
    "ForwarderOptions",
    "PluginInfo",
    "ProviderError",
    "RedactionRule",
    "Rule",
    "RuleInput",
    "Signals",
    "Sink",
    "SinkFactory",
    "Source",
    "SourceFactory",
    "Telemetry",
    "__version__",
    "build_doctor",
    "hookimpl",
    "load_config",
    "parse_duration",
]
