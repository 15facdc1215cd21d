"""Which config keys hold secrets, so that no output (``config.reload`` diffs) shows them.

Three sources, any of which makes a key secret (issue 11, item 15):

- the core sections' secret keys, :data:`SECRET_KEYS`;
- keys a plugin declares for its own section (``register_config_secrets``);
- in a plugin's section, any key whose name says it is one: a word ``key``, ``token``,
  ``secret``, ``password``, ``credential(s)``, ``auth``/``authorization``, ``url``/``uri``
  (a webhook URL's path is its secret) or ``headers`` — unless its last word says it
  is a file name (``key_file``, ``ca_path``): the path to a secret is not the secret.

A secret mapping is masked whole (``otlp.headers``), never walked key by key.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any, Final

#: Core keys whose values never appear in output.
SECRET_KEYS: Final = frozenset({"http.bearer_token", "ai.api_key", "otlp.headers"})
#: What a secret's value becomes in a diff. A secret that changed keeps its field in
#: ``changes``, so a reviewer sees that it changed, never to what.
MASK: Final = "***"

_SECRET_WORDS: Final = frozenset(
    {
        "key",
        "apikey",
        "token",
        "secret",
        "password",
        "passwd",
        "passphrase",
        "credential",
        "credentials",
        "auth",
        "authorization",
        "cookie",
        "url",
        "uri",
        "dsn",
        "webhook",
        "headers",
    }
)
_PATH_WORDS: Final = frozenset({"file", "path", "dir", "directory"})
_WORD: Final = re.compile(r"[A-Z]?[a-z0-9]+|[A-Z]+(?![a-z])")


def _words(name: str) -> list[str]:
    """``routing_key`` -> routing, key; ``apiKey`` -> api, key; ``X-Api-Token`` -> x, api, token."""
    return [w.lower() for w in _WORD.findall(name)]


def named_like_secret(name: str) -> bool:
    """Whether a key's own name (one component) says its value is a secret."""
    words = _words(name)
    if not words or words[-1] in _PATH_WORDS:
        return False
    return any(w in _SECRET_WORDS for w in words) or "password" in name.lower()


class SecretKeys:
    """Decides, for a dotted key, whether its value is masked.

    ``declared``: dotted keys plugins declared (``webhook.routing_key``); ``core``:
    the sections whose keys are listed in :data:`SECRET_KEYS` instead of guessed.
    """

    def __init__(self, declared: Iterable[str] = (), core: Iterable[str] = ()) -> None:
        self._declared = frozenset(declared) | SECRET_KEYS
        self._core = frozenset(core)

    def __call__(self, dotted: str) -> bool:
        parts = dotted.split(".")
        for end in range(1, len(parts) + 1):
            if ".".join(parts[:end]) in self._declared:
                return True
        if parts[0] in self._core:
            return False
        return any(named_like_secret(part) for part in parts[1:])


def mask(value: Any) -> Any:
    """``value`` as it may appear in output: :data:`MASK`, or an unset value as it is."""
    if value is None or value == "" or value == {} or value == []:
        return value
    return MASK
