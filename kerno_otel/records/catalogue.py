"""The event catalogue v1: every built-in event type, who emits it, how its fields are treated.

The ``details`` shape of each type is fixed by its JSON Schema
(``schemas/kerno-audit/v1/<type>.schema.json``); this module holds what the
schema cannot say: the actor, the default severity and the per-field redaction
policies. Plugins add types through :class:`EventType` too (issue: plugin
framework), and are validated and published exactly like these.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final, Literal

#: How the redactor treats one ``details`` field, beyond the default scrub.
#:
#: - ``"ip"``: always replaced by the ``ip`` placeholder, whatever it holds
#:   (``auth.failure.remote_ip``): no pattern has to recognise it first.
#: - ``"path_top"``: a path reduced to its top directory (``/etc/kerno/k.yaml``
#:   -> ``/etc/[REDACTED:path]``), sensitive root or not.
#: - ``"text"``: free text scrubbed with every rule (what every other string
#:   gets too; spelled out for ``error`` fields so the intent is visible).
FieldPolicy = Literal["ip", "path_top", "text"]

Severity = Literal["TRACE", "DEBUG", "INFO", "WARN", "ERROR", "FATAL"]
Outcome = Literal["success", "failure", "unknown"]

SEVERITIES: Final = ("TRACE", "DEBUG", "INFO", "WARN", "ERROR", "FATAL")
OUTCOMES: Final = ("success", "failure", "unknown")


@dataclass(frozen=True)
class EventType:
    """One audit event type: its name, actor and how its fields are redacted.

    ``actor`` is the exact actor, or a prefix ending in ``/`` when the actor
    names a variable part (``config/`` for ``config/<source>``).
    ``schema`` is the ``details`` JSON Schema (a dict) for plugin types; built-in
    types leave it None and take theirs from ``schemas/kerno-audit/v1/``.
    """

    name: str
    actor: str
    severity: Severity = "INFO"
    policies: dict[str, FieldPolicy] = field(default_factory=dict)
    schema: dict[str, object] | None = None
    #: The distribution that contributed the type ("kerno-otel" for built-ins).
    source: str = "kerno-otel"

    def actor_ok(self, actor: str) -> bool:
        """Whether ``actor`` is one this type may be emitted by."""
        if self.actor.endswith("/"):
            return actor.startswith(self.actor) and len(actor) > len(self.actor)
        return actor == self.actor


_BUILTIN: Final[tuple[EventType, ...]] = (
    EventType("daemon.start", "kerno/start", policies={"config_path": "path_top"}),
    EventType("daemon.stop", "kerno/start"),
    EventType("daemon.panic", "kerno/start", severity="FATAL"),
    EventType("config.reload", "config/", policies={"path": "path_top", "error": "text"}),
    EventType("ai.call", "ai/analyzer", policies={"error": "text"}),
    EventType("finding.emit", "doctor/engine", severity="WARN"),
    EventType("auth.failure", "http/server", severity="WARN", policies={"remote_ip": "ip"}),
    EventType("bpf.load", "bpf/loader", policies={"error": "text"}),
    EventType("plugin.load", "plugins/manager"),
    EventType("plugin.error", "plugins/manager", severity="ERROR"),
    EventType("audit.start", "audit/writer"),
    EventType("audit.rotate", "audit/writer"),
    EventType("audit.loss", "audit/writer", severity="ERROR"),
    EventType("audit.recover", "audit/writer", severity="WARN"),
    EventType("audit.checkpoint", "audit/writer"),
)

#: Built-in event types by name.
BUILTIN_TYPES: Final[dict[str, EventType]] = {t.name: t for t in _BUILTIN}
