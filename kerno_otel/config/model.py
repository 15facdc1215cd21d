"""The whole configuration as loaded: :class:`Config`, and its flat view with secrets masked."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from kerno_otel.config.audit import AuditConfig, CheckpointConfig
from kerno_otel.config.secrets import SecretKeys, mask
from kerno_otel.config.sections import SECTION_DEFAULTS


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

    def secret_keys(self, declared: Iterable[str] = ()) -> SecretKeys:
        """The rule saying which keys are secret: core ones, ``declared`` ones, named ones."""
        return SecretKeys(declared, core={"audit", *SECTION_DEFAULTS})

    def flat(
        self, is_secret: Callable[[str], bool] | None = None, *, masked: bool = True
    ) -> dict[str, Any]:
        """Every key as ``section.key`` -> value (nested mappings flattened), secrets masked.

        A secret mapping stays whole under its own key. ``is_secret`` defaults to
        :meth:`secret_keys` (no plugin declarations); ``masked=False`` keeps the values.
        """
        secret = is_secret or self.secret_keys()
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
            _flatten(name, self.section(name), out, secret)
        if masked:
            for key in out:
                if secret(key):
                    out[key] = mask(out[key])
        return out


def _flatten(prefix: str, value: Any, out: dict[str, Any], secret: Callable[[str], bool]) -> None:
    if isinstance(value, Mapping) and value and not secret(prefix):
        for key, item in value.items():
            _flatten(f"{prefix}.{key}", item, out, secret)
    else:
        out[prefix] = list(value) if isinstance(value, tuple) else value
