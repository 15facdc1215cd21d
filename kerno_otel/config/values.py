"""Value checks every section shares: :class:`ConfigError`, durations, numbers, env text."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any, Final

import yaml


class ConfigError(ValueError):
    """A configuration problem, worded for the operator: where, which key, why."""


#: Says where a dotted key's value came from: ``FILE:LINE: audit.fsync`` or ``KERNO_AUDIT_FSYNC``.
Where = Callable[[str], str]


_DURATION = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*(ms|s|m|h|d)?\s*$")
_UNIT_SECONDS: Final = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}


def parse_duration(value: object) -> float:
    """Seconds from ``30``, ``"30s"``, ``"5m"``, ``"24h"``, ``"500ms"``; ValueError otherwise."""
    if isinstance(value, bool):
        raise ValueError("expected a duration like 30s, 5m or 24h")
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        match = _DURATION.match(value)
        if match:
            return float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
    raise ValueError("expected a duration like 30s, 5m or 24h")


def env_value(text: str) -> Any:
    """A ``KERNO_*`` variable's value, read as YAML (``10``, ``true``, ``[a, b]``) or as text."""
    try:
        return yaml.safe_load(text) if text.strip() else None
    except yaml.YAMLError:
        return text


def number(value: Any) -> float:
    """An int or float (not a bool) as a float; ValueError naming the value otherwise."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"expected a number, got {value!r}")
    return float(value)
