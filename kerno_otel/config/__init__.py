"""Configuration: the YAML file, ``KERNO_*`` overrides and embedded defaults, checked per key."""

from __future__ import annotations

from kerno_otel.config.audit import AuditConfig, CheckpointConfig
from kerno_otel.config.diff import diff, is_live
from kerno_otel.config.load import load_config
from kerno_otel.config.model import Config
from kerno_otel.config.sections import SECTION_DEFAULTS
from kerno_otel.config.values import ConfigError, parse_duration

__all__ = [
    "SECTION_DEFAULTS",
    "AuditConfig",
    "CheckpointConfig",
    "Config",
    "ConfigError",
    "diff",
    "is_live",
    "load_config",
    "parse_duration",
]
