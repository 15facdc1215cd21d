"""Configuration: one YAML file plus ``KERNO_<SECTION>_<KEY>`` overrides over embedded defaults.

Every error names where the bad value came from (``FILE:LINE: audit.fsync: …`` or
``KERNO_AUDIT_FSYNC: …``) and why. Loading is all-or-nothing: a bad file
produces an error and no half-applied config.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Final

import yaml

from kerno_otel._redact import RedactionRule


class ConfigError(ValueError):
    """A configuration problem, worded for the operator: where, which key, why."""


@dataclass(frozen=True)
class CheckpointConfig:
    """``audit.checkpoint``: signed checkpoints (see the tamper-evidence docs)."""

    key_file: str | None = None
    every_records: int = 10_000
    every_seconds: float = 60.0


def default_audit_path() -> str:
    """Where the audit log goes when ``audit.file_path`` is not set.

    Root writes under ``/var/log/kerno/`` (a directory of its own, so it can be
    0700 and hold the rotated files and sidecars); anyone else under their XDG
    state directory, so ``kerno-otel`` works unprivileged.
    """
    if os.geteuid() == 0:
        return "/var/log/kerno/kerno-audit.jsonl"
    state = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return str(Path(state) / "kerno" / "kerno-audit.jsonl")


@dataclass(frozen=True)
class AuditConfig:
    """The ``audit`` section. Defaults are the embedded defaults of DESIGN.md."""

    file_path: str = field(default_factory=default_audit_path)
    max_size_mb: float = 100.0
    max_backups: int = 0
    max_age_days: float = 0.0
    compress: bool = False
    rotate_interval: float | None = None  # seconds; YAML accepts "24h", "30m", "90s"
    fsync: str = "batch"
    fsync_interval_ms: int = 50
    on_overflow: str = "block"
    on_write_error: str = "block"
    stderr: bool = False
    redaction: tuple[RedactionRule, ...] = ()
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    #: Records the writer may hold in memory before back-pressure (or drops).
    queue_size: int = 65_536


@dataclass(frozen=True)
class Config:
    """The whole configuration: the typed sections this package owns, the rest raw.

    Sections owned by plugins (named after the plugin) and those whose typed
    form lands with later features are kept in ``sections`` as plain dicts.
    """

    audit: AuditConfig = field(default_factory=AuditConfig)
    sections: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    source: str | None = None


_CHOICES: Final[dict[str, tuple[str, ...]]] = {
    "fsync": ("batch", "always", "never"),
    "on_overflow": ("block", "drop"),
    "on_write_error": ("block", "exit", "drop"),
}

_DURATION = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*(ms|s|m|h|d)?\s*$")
_UNIT_SECONDS: Final = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}

SEARCH_PATH: Final = ("/etc/kerno/kerno.yaml", "./kerno.yaml")


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


class _LineLoader(yaml.SafeLoader):
    """A SafeLoader that remembers the line of every mapping key, by dotted path."""


def _load_yaml(text: str, name: str) -> tuple[Any, dict[str, int]]:
    lines: dict[str, int] = {}
    try:
        node = yaml.compose(text, Loader=_LineLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{name}:{mark.line + 1}" if mark is not None else name
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"{where}: not valid YAML: {problem}") from None

    def walk(n: yaml.Node, path: str) -> None:
        if isinstance(n, yaml.MappingNode):
            for key, value in n.value:
                sub = f"{path}.{key.value}" if path else str(key.value)
                lines[sub] = key.start_mark.line + 1
                walk(value, sub)
        elif isinstance(n, yaml.SequenceNode):
            for i, item in enumerate(n.value):
                sub = f"{path}[{i}]"
                lines[sub] = item.start_mark.line + 1
                walk(item, sub)

    if node is None:
        return {}, lines
    walk(node, "")
    data = yaml.load(text, Loader=_LineLoader)
    return data, lines


def find_config_file(explicit: str | None, env: Mapping[str, str]) -> Path | None:
    """The file to read: ``--config``, ``KERNO_CONFIG``, then the search path; None for defaults."""
    if explicit:
        return Path(explicit)
    if env.get("KERNO_CONFIG"):
        return Path(env["KERNO_CONFIG"])
    for candidate in SEARCH_PATH:
        if Path(candidate).is_file():
            return Path(candidate)
    return None


def load_config(path: str | Path | None = None, env: Mapping[str, str] | None = None) -> Config:
    """Read the config file (if any) and the environment, and check every ``audit`` key.

    ``path`` None searches ``KERNO_CONFIG`` and the default locations; no file at
    all means the embedded defaults. Raises :class:`ConfigError`.
    """
    env = os.environ if env is None else env
    file = find_config_file(str(path) if path is not None else None, env)
    raw: dict[str, Any] = {}
    lines: dict[str, int] = {}
    name = str(file) if file is not None else "<defaults>"
    if file is not None:
        try:
            text = file.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise ConfigError(f"{file}: no such config file") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{file}: cannot read config: {exc}") from None
        data, lines = _load_yaml(text, name)
        if data is None:
            data = {}
        if not isinstance(data, dict):
            raise ConfigError(f"{file}:1: the config must be a mapping of sections")
        for section, value in data.items():
            if value is None:
                value = {}
            if not isinstance(value, dict):
                where = f"{file}:{lines.get(str(section), 1)}"
                raise ConfigError(f"{where}: {section}: a section must be a mapping")
            raw[str(section)] = dict(value)

    def in_file(key: str) -> str:
        line = lines.get(key)
        return f"{name}:{line}: {key}" if line else f"{name}: {key}"

    sources: dict[str, str] = {}
    _apply_env(raw, env, sources)
    audit = _audit_section(raw.get("audit", {}), lambda key: sources.get(key) or in_file(key))
    others = {k: v for k, v in raw.items() if k != "audit"}
    return Config(audit=audit, sections=others, source=str(file) if file is not None else None)


def _apply_env(raw: dict[str, Any], env: Mapping[str, str], sources: dict[str, str]) -> None:
    """``KERNO_AUDIT_MAX_SIZE_MB=10`` -> ``raw["audit"]["max_size_mb"] = 10``.

    Only sections this package types are matched by key (the split between
    section and key is otherwise ambiguous); nested keys use the field names
    (``KERNO_AUDIT_CHECKPOINT_KEY_FILE``).
    """
    known = {f.name for f in fields(AuditConfig)}
    checkpoint_keys = {f.name for f in fields(CheckpointConfig)}
    for var, text in env.items():
        if not var.startswith("KERNO_AUDIT_"):
            continue
        key = var[len("KERNO_AUDIT_") :].lower()
        value = _env_value(text)
        section = raw.setdefault("audit", {})
        if key.startswith("checkpoint_") and key[len("checkpoint_") :] in checkpoint_keys:
            sub = key[len("checkpoint_") :]
            checkpoint = section.get("checkpoint")
            if not isinstance(checkpoint, dict):
                checkpoint = {}
                section["checkpoint"] = checkpoint
            checkpoint[sub] = value
            sources[f"audit.checkpoint.{sub}"] = var
        elif key in known:
            section[key] = value
            sources[f"audit.{key}"] = var
        else:
            raise ConfigError(f"{var}: unknown audit key {key!r}")


def _env_value(text: str) -> Any:
    try:
        return yaml.safe_load(text) if text.strip() else None
    except yaml.YAMLError:
        return text


def _audit_section(section: Mapping[str, Any], where: Any) -> AuditConfig:
    known = {f.name: f for f in fields(AuditConfig)}
    values: dict[str, Any] = {}
    for key, value in section.items():
        dotted = f"audit.{key}"
        if key not in known:
            raise ConfigError(f"{where(dotted)}: unknown key (known: {', '.join(sorted(known))})")
        try:
            values[key] = _convert(key, value, where)
        except ConfigError:
            raise
        except ValueError as exc:
            raise ConfigError(f"{where(dotted)}: {exc}") from None
    return AuditConfig(**values)


def _convert(key: str, value: Any, where: Any) -> Any:
    if key == "file_path":
        if not isinstance(value, str) or not value.strip():
            raise ValueError("expected a file path")
        return os.path.expanduser(value)
    if key in ("max_size_mb", "max_age_days"):
        number = _number(value)
        if number < 0 or (key == "max_size_mb" and number == 0):
            raise ValueError("expected a number > 0" if key == "max_size_mb" else "expected >= 0")
        return number
    if key in ("max_backups", "fsync_interval_ms", "queue_size"):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError("expected a whole number >= 0")
        if key == "queue_size" and value < 16:
            raise ValueError("expected at least 16")
        return value
    if key in ("compress", "stderr"):
        if not isinstance(value, bool):
            raise ValueError("expected true or false")
        return value
    if key == "rotate_interval":
        if value is None or value == 0:
            return None
        seconds = parse_duration(value)
        if seconds < 1:
            raise ValueError("expected at least 1s")
        return seconds
    if key in _CHOICES:
        if value not in _CHOICES[key]:
            raise ValueError(f"expected one of {', '.join(_CHOICES[key])}, got {value!r}")
        return value
    if key == "redaction":
        if value is None:
            return ()
        if not isinstance(value, list):
            raise ValueError("expected a list of rules ({kind, pattern, replacement?})")
        rules = []
        for i, item in enumerate(value):
            try:
                rules.append(RedactionRule.from_config(item, f"audit.redaction[{i}]"))
            except ValueError as exc:
                # from_config already names the rule; add the file and line.
                line_where = where(f"audit.redaction[{i}]")
                raise ConfigError(f"{line_where.rsplit(': ', 1)[0]}: {exc}") from None
        return tuple(rules)
    if key == "checkpoint":
        return _checkpoint(value, where)
    raise ValueError("unsupported key")  # pragma: no cover - guarded by the known-key check


def _checkpoint(value: Any, where: Any) -> CheckpointConfig:
    if value is None:
        return CheckpointConfig()
    if not isinstance(value, dict):
        raise ValueError("expected a mapping (key_file, every_records, every_seconds)")
    out: dict[str, Any] = {}
    known = {f.name for f in fields(CheckpointConfig)}
    for key, item in value.items():
        dotted = f"audit.checkpoint.{key}"
        if key not in known:
            raise ConfigError(f"{where(dotted)}: unknown key (known: {', '.join(sorted(known))})")
        if key == "key_file":
            if item is not None and not isinstance(item, str):
                raise ConfigError(f"{where(dotted)}: expected a file path")
            out[key] = os.path.expanduser(item) if item else None
        elif key == "every_records":
            if isinstance(item, bool) or not isinstance(item, int) or item < 1:
                raise ConfigError(f"{where(dotted)}: expected a whole number >= 1")
            out[key] = item
        else:
            try:
                seconds = parse_duration(item)
            except ValueError as exc:
                raise ConfigError(f"{where(dotted)}: {exc}") from None
            if seconds <= 0:
                raise ConfigError(f"{where(dotted)}: expected a duration > 0")
            out[key] = seconds
    return CheckpointConfig(**out)


def _number(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"expected a number, got {value!r}")
    return float(value)
