"""What a reload changed: :func:`diff` of two configs, and which changes apply at once."""

from __future__ import annotations

from typing import Any, Final

from kerno_otel.config.model import MASK, SECRET_KEYS, Config

#: Keys a reload applies at once; every other change waits for a restart.
LIVE_PREFIXES: Final = ("doctor.", "ai.", "http.bearer_token")


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
