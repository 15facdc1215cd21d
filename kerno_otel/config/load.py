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

from kerno_otel.records.redact import RedactionRule


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
    #: Where the stages after the OTel Logger run: ``process`` (a child process of
    #: our own, so emitters keep their core) or ``thread`` (in this process).
    pipeline: str = "process"


#: The other sections of DESIGN.md with their embedded defaults. A key's type is
#: its default's (None: a string or nothing); unknown keys are refused.
SECTION_DEFAULTS: Final[dict[str, dict[str, Any]]] = {
    "otlp": {
        "enabled": False,
        "endpoint": "http://127.0.0.1:4317",
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
}
_SECTION_DURATIONS: Final = frozenset(
    {"otlp.timeout", "doctor.duration", "doctor.interval", "ai.cache_ttl", "ai.timeout"}
)

# ai.provider is any name: anthropic, openai, ollama, or one a plugin registers
# (the analyzer checks it when it builds the provider).

#: Keys whose values never appear in output (reload diffs, ``--json`` dumps).
SECRET_KEYS: Final = frozenset({"http.bearer_token", "ai.api_key", "otlp.headers"})
MASK: Final = "***"

#: Keys a reload applies at once; every other change waits for a restart.
LIVE_PREFIXES: Final = ("doctor.", "ai.", "http.bearer_token")


@dataclass(frozen=True)
class Config:
    """The whole configuration: the typed ``audit`` section and every other section.

    Sections of DESIGN.md are checked key by key and filled with their
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


def diff(old: Config, new: Config) -> list[tuple[str, Any, Any]]:
    """(key, before, after) for every key that differs; secrets masked."""
    a, b = old.flat(), new.flat()
    changed = []
    for key in sorted(set(a) | set(b)):
        before, after = a.get(key), b.get(key)
        if before != after:
            changed.append((key, before, after))
    # A secret that changed still reads "***" -> "***": compare the raw values too.
    for key in sorted(SECRET_KEYS):
        section, _, name = key.partition(".")
        if old.section(section).get(name) != new.section(section).get(name) and not any(
            c[0] == key for c in changed
        ):
            changed.append((key, MASK, MASK))
    return changed


def is_live(key: str) -> bool:
    """Whether a change of ``key`` can be applied without a restart."""
    return key.startswith(LIVE_PREFIXES)


_CHOICES: Final[dict[str, tuple[str, ...]]] = {
    "fsync": ("batch", "always", "never"),
    "on_overflow": ("block", "drop"),
    "on_write_error": ("block", "exit", "drop"),
    "pipeline": ("process", "thread"),
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
                at = f"{file}:{lines.get(str(section), 1)}"
                raise ConfigError(f"{at}: {section}: a section must be a mapping")
            raw[str(section)] = dict(value)

    def in_file(key: str) -> str:
        line = lines.get(key)
        return f"{name}:{line}: {key}" if line else f"{name}: {key}"

    sources: dict[str, str] = {}
    _apply_env(raw, env, sources)
    _apply_section_env(raw, env, sources)

    def where(key: str) -> str:
        return sources.get(key) or in_file(key)

    audit = _audit_section(raw.get("audit", {}), where)
    others: dict[str, Mapping[str, Any]] = {}
    for section, value in raw.items():
        if section == "audit":
            continue
        known = section in SECTION_DEFAULTS
        others[section] = _section(section, value, where) if known else value
    for section, defaults in SECTION_DEFAULTS.items():
        others.setdefault(section, _copy(defaults))
    return Config(audit=audit, sections=others, source=str(file) if file is not None else None)


def _copy(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return list(value)
    return value


def _apply_section_env(
    raw: dict[str, Any], env: Mapping[str, str], sources: dict[str, str]
) -> None:
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
        raw[section][key] = _env_value(text)
        sources[f"{section}.{key}"] = var


def _section(name: str, value: Mapping[str, Any], where: Any) -> dict[str, Any]:
    defaults = SECTION_DEFAULTS[name]
    out: dict[str, Any] = _copy(defaults)
    for key, item in value.items():
        dotted = f"{name}.{key}"
        if key not in defaults:
            raise ConfigError(
                f"{where(dotted)}: unknown key (known: {', '.join(sorted(defaults))})"
            )
        try:
            out[key] = _check_value(dotted, defaults[key], item)
        except ValueError as exc:
            raise ConfigError(f"{where(dotted)}: {exc}") from None
    return out


def _check_value(dotted: str, default: Any, value: Any) -> Any:
    if dotted in _SECTION_CHOICES:
        if value not in _SECTION_CHOICES[dotted]:
            shown = ", ".join(str(c) for c in _SECTION_CHOICES[dotted] if c is not None)
            raise ValueError(f"expected one of {shown}, got {value!r}")
        return value
    if dotted in _SECTION_DURATIONS:
        parse_duration(value)
        return value
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise ValueError("expected true or false")
        return value
    if isinstance(default, int) and not isinstance(default, bool):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError("expected a whole number >= 0")
        return value
    if isinstance(default, float):
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f"expected a number, got {value!r}")
        return float(value)
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
            out = dict(default)
            for key, item in value.items():
                if key not in default:
                    raise ValueError(
                        f"unknown threshold {key!r} (known: {', '.join(sorted(default))})"
                    )
                if isinstance(item, bool) or not isinstance(item, int | float) or item < 0:
                    raise ValueError(f"{key}: expected a number >= 0")
                out[key] = item
            return out
        return {str(k): str(v) for k, v in value.items()}
    if value is not None and not isinstance(value, str):
        raise ValueError(f"expected a string, got {type(value).__name__}")
    return value


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
