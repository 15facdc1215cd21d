"""What a reload changed: :func:`diff` of two configs, and which changes apply at once."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Final

from kerno_otel.config.model import Config
from kerno_otel.config.secrets import mask

#: Keys a reload applies at once; every other change waits for a restart.
LIVE_PREFIXES: Final = ("doctor.", "ai.", "http.bearer_token")


def diff(old: Config, new: Config, secrets: Iterable[str] = ()) -> list[tuple[str, Any, Any]]:
    """(key, before, after) for every key that differs; secrets masked.

    ``secrets``: dotted keys plugins declared secret (``webhook.routing_key``), on
    top of the core ones and every plugin key named like a secret
    (:mod:`kerno_otel.config.secrets`). The raw values are compared, so a secret
    that changed is listed (``***`` -> ``***``) though neither value is shown.
    """
    secret = new.secret_keys(secrets)
    a, b = old.flat(secret, masked=False), new.flat(secret, masked=False)
    changed = []
    for key in sorted(set(a) | set(b)):
        before, after = a.get(key), b.get(key)
        if before != after:
            if secret(key):
                before, after = mask(before), mask(after)
            changed.append((key, before, after))
    return changed


def is_live(key: str) -> bool:
    """Whether a change of ``key`` can be applied without a restart."""
    return key.startswith(LIVE_PREFIXES)
