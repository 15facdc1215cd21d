"""The whole configuration as loaded: :class:`Config`, and its flat view with secrets masked."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any, Final

from kerno_otel.config.audit import AuditConfig, CheckpointConfig
from kerno_otel.config.sections import SECTION_DEFAULTS

#: Keys whose values never appear in output (reload diffs, ``--json`` dumps).
SECRET_KEYS: Final = frozenset({"http.bearer_token", "ai.api_key", "otlp.headers"})
MASK: Final = "***"


@dataclass(frozen=True)
class Config:
    """The whole configuration: the typed ``audit`` section and every other section.

    Sections of the config (README, "Configuration") are checked key by key and filled with their
    defaults; a plugin's own section (named after the plugin) is kept as the
    file gave it, for the plugin to check.
    """

    audit: AuditConfig = field(default_factory=AuditConfig)
    sections: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    source: str | None = None

    def section(self, name: str) -> Mapping[str, Any]:
        """One section: defaults merged with the file and environment."""
        if name in self.sections:
            return self.sections[name]
        return SECTION_DEFAULTS.get(name, {})

    def flat(self) -> dict[str, Any]:
        """Every key as ``section.key`` -> value (nested mappings flattened), secrets masked."""
        out: dict[str, Any] = {}
        for f in fields(AuditConfig):
            value = getattr(self.audit, f.name)
            if f.name == "checkpoint":
                for sub in fields(CheckpointConfig):
                    out[f"audit.checkpoint.{sub.name}"] = getattr(value, sub.name)
            elif f.name == "redaction":
                out["audit.redaction"] = [(r.kind, r.pattern) for r in value]
            else:
                out[f"audit.{f.name}"] = value
        names = set(SECTION_DEFAULTS) | set(self.sections)
        for name in sorted(names):
            _flatten(name, self.section(name), out)
        for key in out:
            if key in SECRET_KEYS and out[key]:
                out[key] = MASK
        return out


def _flatten(prefix: str, value: Any, out: dict[str, Any]) -> None:
    if isinstance(value, Mapping) and value and f"{prefix}" not in SECRET_KEYS:
        for key, item in value.items():
            _flatten(f"{prefix}.{key}", item, out)
    else:
        out[prefix] = list(value) if isinstance(value, tuple) else value
