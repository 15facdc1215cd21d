"""What a type name, an actor and a plugin's ``details`` schema must be; JSON pointers in reasons.

Shared by the schema set (:mod:`kerno_otel.records.schema`), which checks a plugin's
event types with these, and the validator (:mod:`kerno_otel.records.validate`).
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterable, Mapping
from typing import Any, Final

from kerno_otel.records.catalogue import EventType
from kerno_otel.records.patterns import find_leak

DIALECT: Final = "https://json-schema.org/draft/2020-12/schema"
BASE_URI: Final = "https://kerno.dev/schemas/kerno-audit/v1/"
TYPE_PATTERN: Final = r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+$"
ACTOR_PATTERN: Final = r"^[a-z0-9_.-]+/[A-Za-z0-9_.-]+$"
_ACTOR_PREFIX_PATTERN: Final = r"^[a-z0-9_.-]+/$"
_TYPE_RE: Final = re.compile(TYPE_PATTERN)


def schema_file(type_name: str) -> str:
    """The file name of an event type's ``details`` schema."""
    return f"{type_name}.schema.json"


def type_problem(name: str, event_type: EventType, known: Mapping[str, EventType]) -> str | None:
    if name != event_type.name:
        return f"registered under a different name ({event_type.name!r})"
    if not type_name_ok(name):
        return f"a type name must match {TYPE_PATTERN} (at most 64 characters)"
    if name in known:
        clash = known[name].source
        return f"clashes with the type of the same name from {clash}"
    actor_pattern = _ACTOR_PREFIX_PATTERN if event_type.actor.endswith("/") else ACTOR_PATTERN
    if not re.fullmatch(actor_pattern, event_type.actor):
        return f"actor {event_type.actor!r} must match {ACTOR_PATTERN} (or be a prefix 'area/')"
    return None


def plugin_details(name: str, event_type: EventType) -> tuple[dict[str, Any], str | None]:
    """The plugin's details schema, completed with $schema/$id, or the reason it is bad."""
    from jsonschema import Draft202012Validator, SchemaError

    if not isinstance(event_type.schema, dict):
        return {}, "no details schema (EventType.schema must be a dict)"
    doc: dict[str, Any] = copy.deepcopy(event_type.schema)
    if doc.setdefault("$schema", DIALECT) != DIALECT:
        return doc, f"$schema must be {DIALECT}"
    expected_id = BASE_URI + schema_file(name)
    if doc.setdefault("$id", expected_id) != expected_id:
        return doc, f"$id must be absent or {expected_id} (the set is published together)"
    try:
        Draft202012Validator.check_schema(doc)
    except SchemaError as e:
        where = pointer(e.absolute_path)
        return doc, f"not a valid 2020-12 schema at {where}: {e.message}"
    if doc.get("type") != "object" or doc.get("additionalProperties") is not False:
        return doc, 'details must be closed: "type": "object" and "additionalProperties": false'
    return doc, None


def type_name_ok(name: str) -> bool:
    return len(name) <= 64 and _TYPE_RE.fullmatch(name) is not None and find_leak(name) is None


# Object keys shown in a reason's JSON pointer; any other key (it came from the
# record, so it may be the leak itself) is shown as a placeholder.
_SHOWN_KEY: Final = re.compile(r"[A-Za-z0-9_.-]{1,64}")
_HIDDEN_KEY: Final = "[REDACTED:key]"


def pointer(path: Iterable[str | int]) -> str:
    """A JSON pointer for a reason, hiding any key that might itself be a leak."""
    parts = []
    for part in path:
        if isinstance(part, int):
            parts.append(str(part))
        elif _SHOWN_KEY.fullmatch(part) and find_leak(part) is None:
            parts.append(part)  # no "~" or "/" to escape: _SHOWN_KEY excludes them
        else:
            parts.append(_HIDDEN_KEY)
    return "/" + "/".join(parts) if parts else "(root)"
