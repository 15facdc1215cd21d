"""Configuration: one YAML file plus ``KERNO_<SECTION>_<KEY>`` overrides over embedded defaults.

Every error names where the bad value came from (``FILE:LINE: audit.fsync: …`` or
``KERNO_AUDIT_FSYNC: …``) and why. Loading is all-or-nothing: a bad file
produces an error and no half-applied config.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Iterable, Mapping
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, Final

import yaml

from kerno_otel.config.audit import apply_audit_env, audit_section
from kerno_otel.config.files import read_config_file
from kerno_otel.config.model import Config
from kerno_otel.config.sections import (
    SECTION_DEFAULTS,
    apply_section_env,
    check_section,
    copy_defaults,
)
from kerno_otel.config.values import ConfigError
from kerno_otel.hookspecs import ENTRY_POINT_GROUP

SEARCH_PATH: Final = ("/etc/kerno/kerno.yaml", "./kerno.yaml")


#: A config that expands past this many values through YAML aliases is refused: a few
#: lines of nested ``*alias`` lists ("billion laughs") would otherwise hang the loader.
MAX_VALUES: Final = 100_000


class _LineLoader(yaml.SafeLoader):
    """A SafeLoader that remembers the line of every mapping key, by dotted path."""


def _yaml_error(exc: yaml.YAMLError, name: str) -> ConfigError:
    mark = getattr(exc, "problem_mark", None)
    where = f"{name}:{mark.line + 1}" if mark is not None else name
    problem = getattr(exc, "problem", None) or str(exc)
    return ConfigError(f"{where}: not valid YAML: {problem}")


def _expanded_size(node: yaml.Node, sizes: dict[int, int]) -> int:
    """How many values ``node`` stands for once its aliases are expanded (memoised by node)."""
    known = sizes.get(id(node))
    if known is not None:
        return known
    size = 1
    if isinstance(node, yaml.MappingNode):
        size += sum(_expanded_size(v, sizes) for _, v in node.value)
    elif isinstance(node, yaml.SequenceNode):
        size += sum(_expanded_size(item, sizes) for item in node.value)
    sizes[id(node)] = min(size, MAX_VALUES + 1)
    return sizes[id(node)]


def _load_yaml(text: str, name: str) -> tuple[Any, dict[str, int]]:
    try:
        return _parse_yaml(text, name)
    except RecursionError:
        raise ConfigError(f"{name}: not valid YAML: nested too deeply") from None


def _parse_yaml(text: str, name: str) -> tuple[Any, dict[str, int]]:
    lines: dict[str, int] = {}
    try:
        node = yaml.compose(text, Loader=_LineLoader)
    except yaml.YAMLError as exc:
        raise _yaml_error(exc, name) from None
    if node is None:
        return {}, lines
    if _expanded_size(node, {}) > MAX_VALUES:
        raise ConfigError(
            f"{name}: expands to more than {MAX_VALUES} values through YAML aliases (*name)"
        )

    def walk(n: yaml.Node, path: str) -> None:
        if isinstance(n, yaml.MappingNode):
            seen: dict[str, int] = {}
            for key, value in n.value:
                sub = f"{path}.{key.value}" if path else str(key.value)
                line = key.start_mark.line + 1
                if key.tag != "tag:yaml.org,2002:merge" and isinstance(key.value, str):
                    if key.value in seen:
                        # YAML keeps the last silently: a second "audit:" section would
                        # replace the first one without a word.
                        raise ConfigError(
                            f"{name}:{line}: {sub}: given twice (first on line {seen[key.value]})"
                        )
                    seen[key.value] = line
                lines[sub] = line
                walk(value, sub)
        elif isinstance(n, yaml.SequenceNode):
            for i, item in enumerate(n.value):
                sub = f"{path}[{i}]"
                lines[sub] = item.start_mark.line + 1
                walk(item, sub)

    walk(node, "")
    try:
        data = yaml.load(text, Loader=_LineLoader)
    except yaml.YAMLError as exc:  # a tag SafeLoader will not construct (!!python/object)
        raise _yaml_error(exc, name) from None
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


def plugin_section_names() -> frozenset[str]:
    """The sections plugins may have: the name of every installed plugin entry point.

    Installed, not only allowed: a disabled plugin's section is not a typo.
    """
    return frozenset(point.name for point in entry_points(group=ENTRY_POINT_GROUP))


def _check_sections(
    raw: Mapping[str, Any], lines: Mapping[str, int], name: str, plugins: Iterable[str] | None
) -> None:
    """A top-level key that is neither a core section nor a plugin's is a mistake (``adit:``)."""
    core = {"audit", *SECTION_DEFAULTS}
    known = core | plugin_section_names() | set(plugins or ())
    for section in raw:
        if section in known:
            continue
        close = difflib.get_close_matches(section, sorted(known), n=1, cutoff=0.6)
        hint = f"did you mean {close[0]!r}? " if close else ""
        others = sorted(known - core)
        raise ConfigError(
            f"{name}:{lines.get(section, 1)}: {section}: unknown section ({hint}"
            f"sections: {', '.join(sorted(core))}; plugin sections: "
            f"{', '.join(others) if others else 'none installed'})"
        )


def load_config(
    path: str | Path | None = None,
    env: Mapping[str, str] | None = None,
    *,
    plugin_sections: Iterable[str] | None = None,
) -> Config:
    """Read the config file (if any) and the environment, and check every ``audit`` key.

    ``path`` None searches ``KERNO_CONFIG`` and the default locations; no file at
    all means the embedded defaults. A top-level section must be a core one or an
    installed plugin's, or one of ``plugin_sections`` (plugins registered in process,
    not through an entry point). Raises :class:`ConfigError`.
    """
    env = os.environ if env is None else env
    file = find_config_file(str(path) if path is not None else None, env)
    raw: dict[str, Any] = {}
    lines: dict[str, int] = {}
    name = str(file) if file is not None else "<defaults>"
    if file is not None:
        text = read_config_file(file)
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
        _check_sections(raw, lines, name, plugin_sections)

    def in_file(key: str) -> str:
        line = lines.get(key)
        return f"{name}:{line}: {key}" if line else f"{name}: {key}"

    sources: dict[str, str] = {}
    apply_audit_env(raw, env, sources)
    apply_section_env(raw, env, sources)

    def where(key: str) -> str:
        return sources.get(key) or in_file(key)

    audit = audit_section(raw.get("audit", {}), where)
    others: dict[str, Mapping[str, Any]] = {}
    for section, value in raw.items():
        if section == "audit":
            continue
        known = section in SECTION_DEFAULTS
        others[section] = check_section(section, value, where) if known else value
    for section, defaults in SECTION_DEFAULTS.items():
        others.setdefault(section, copy_defaults(defaults))
    return Config(audit=audit, sections=others, source=str(file) if file is not None else None)
