"""The ``audit`` section: :class:`AuditConfig` and :class:`CheckpointConfig`, and their checks.

The ``audit`` section is the one this package types field by field (the audit
pipeline reads it on every record); :func:`audit_section` turns the file's and
environment's raw values into an :class:`AuditConfig`, refusing unknown keys.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Final

from kerno_otel.config.values import NUMBERS, ConfigError, Where, check_number, env_value
from kerno_otel.records.redact import RedactionRule


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
    """The ``audit`` section, with its embedded defaults (README, "Configuration")."""

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
    #: Where the stages after the OTel Logger run: ``process`` (a child process of
    #: our own, so emitters keep their core) or ``thread`` (in this process).
    pipeline: str = "process"
    #: A group (name or gid) that may read the log: files 0640 and the directory 0750,
    #: owned by it, instead of 0600/0700 (docs/collector.md, "Permissions").
    file_group: str | int | None = None


_CHOICES: Final[dict[str, tuple[str, ...]]] = {
    "fsync": ("batch", "always", "never"),
    "on_overflow": ("block", "drop"),
    "on_write_error": ("block", "exit", "drop"),
    "pipeline": ("process", "thread"),
}


def apply_audit_env(raw: dict[str, Any], env: Mapping[str, str], sources: dict[str, str]) -> None:
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
        value = env_value(text)
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


def audit_section(section: Mapping[str, Any], where: Where) -> AuditConfig:
    """The ``audit`` section's raw values, checked key by key. Raises :class:`ConfigError`."""
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


def _convert(key: str, value: Any, where: Where) -> Any:
    if key == "file_path":
        if not isinstance(value, str) or not value.strip():
            raise ValueError("expected a file path")
        return os.path.expanduser(value)
    if key == "rotate_interval":
        if value is None or (not isinstance(value, bool | str) and value == 0):
            return None
        return check_number("audit.rotate_interval", value)
    if f"audit.{key}" in NUMBERS:
        return check_number(f"audit.{key}", value)
    if key in ("compress", "stderr"):
        if not isinstance(value, bool):
            raise ValueError("expected true or false")
        return value
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
    if key == "file_group":
        return _file_group(value)
    raise ValueError("unsupported key")  # pragma: no cover - guarded by the known-key check


def _file_group(value: Any) -> str | int | None:
    import grp

    if value is None or value == "":
        return None
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise ValueError("expected a group name or number")
    if isinstance(value, int) or value.isdigit():
        if int(value) < 0:
            raise ValueError("expected a group name or number")
        return int(value)
    try:
        grp.getgrnam(value)
    except KeyError:
        raise ValueError(f"no such group {value!r}") from None
    return value


def _checkpoint(value: Any, where: Where) -> CheckpointConfig:
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
        else:
            try:
                out[key] = check_number(dotted, item)
            except ValueError as exc:
                raise ConfigError(f"{where(dotted)}: {exc}") from None
    return CheckpointConfig(**out)
