"""Doctor thresholds: kerno's own, those plugin rules declare, and the config that sets them.

``doctor.thresholds`` holds kerno's thresholds (with defaults in the embedded
config) and any threshold a loaded rule declares. A plugin rule declares its
own in a ``thresholds`` attribute, name -> default::

    def diskguard(given: RuleInput) -> list[Finding]:
        limit = given.thresholds["diskguard_pct"]
        ...

    diskguard.thresholds = {"diskguard_pct": 90.0}

The config may then set ``doctor.thresholds.diskguard_pct``. A key that neither
kerno nor a loaded rule declares is refused when the doctor is built (the rules
are not known when the config file is read), naming the key.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any, Final

from kerno_otel.config import SECTION_DEFAULTS, ConfigError

#: kerno's own thresholds and their defaults.
BUILTIN: Final[Mapping[str, float]] = SECTION_DEFAULTS["doctor"]["thresholds"]

_NAME: Final = re.compile(r"[a-z][a-z0-9_]{0,63}")


def threshold_problem(rule: str, declared: Any) -> str | None:
    """Why rule ``rule``'s ``thresholds`` attribute is unusable, or None (absent is fine)."""
    if declared is None:
        return None
    if not isinstance(declared, Mapping):
        return f"rule {rule!r}: thresholds must be a mapping of name to default number"
    for name, default in declared.items():
        if not isinstance(name, str) or not _NAME.fullmatch(name):
            return f"rule {rule!r}: threshold name {name!r} must match {_NAME.pattern}"
        if name in BUILTIN:
            return f"rule {rule!r}: threshold {name!r} is kerno's own; choose another name"
        if isinstance(default, bool) or not isinstance(default, int | float) or default < 0:
            return f"rule {rule!r}: threshold {name!r}: the default must be a number >= 0"
    return None


def declared(rules: Iterable[Any]) -> dict[str, float]:
    """The thresholds ``rules`` declare, with their defaults (the first declaration wins)."""
    out: dict[str, float] = {}
    for rule in rules:
        extra = getattr(rule, "thresholds", None)
        if threshold_problem("?", extra) is not None or extra is None:
            continue
        for name, default in extra.items():
            out.setdefault(name, float(default))
    return out


def resolve(
    configured: Mapping[str, Any], by_rules: Mapping[str, float] | None
) -> dict[str, float]:
    """The thresholds rules see: rule defaults, overridden by ``doctor.thresholds``.

    With ``by_rules`` None (the rules are not known yet) unknown keys pass; otherwise a
    key neither kerno nor a rule declares is a ConfigError naming it.
    """
    if by_rules is not None:
        for key in configured:
            if key not in BUILTIN and key not in by_rules:
                known = ", ".join(sorted({*BUILTIN, *by_rules}))
                raise ConfigError(f"doctor.thresholds: unknown threshold {key!r} (known: {known})")
    return {**(by_rules or {}), **{k: float(v) for k, v in configured.items()}}
