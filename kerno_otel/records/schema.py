"""The published audit schema set (kerno-audit v1): generating, loading and extending it.

``schemas/kerno-audit/v1/`` holds one JSON Schema 2020-12 document per event
type (the shape of its ``details``, written by hand), ``common.schema.json``
(generated here from :mod:`kerno_otel.records.patterns`) and ``record.schema.json``
(the whole line, generated here from :mod:`kerno_otel.records.catalogue`).
``scripts/gen_schemas.py`` writes the two generated files; a test keeps the
committed copies equal to what this module generates.

Validating records against the set is :mod:`kerno_otel.records.validate`.
"""

from __future__ import annotations

import copy
import functools
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

import jsonschema_rs

from kerno_otel.records.catalogue import BUILTIN_TYPES, OUTCOMES, SEVERITIES, EventType
from kerno_otel.records.naming import (
    ACTOR_PATTERN,
    BASE_URI,
    DIALECT,
    TYPE_PATTERN,
    plugin_details,
    schema_file,
    type_problem,
)
from kerno_otel.records.patterns import LEAK_PATTERNS

COMMON: Final = "common.schema.json"
RECORD: Final = "record.schema.json"
#: The whole set as one compound document (every file embedded under ``$defs``).
BUNDLE: Final = "bundle.schema.json"


def dumps(document: Mapping[str, Any]) -> str:
    """The canonical text of a schema file: 2-space indent, UTF-8, final newline."""
    return json.dumps(document, indent=2, ensure_ascii=False) + "\n"


def _ecma(pattern: str) -> str:
    # patterns.py writes `\"` inside character classes. Python's re and Rust's
    # regex read it as `"`, but ECMA-262 in unicode mode (ajv's default) rejects
    # the escape, so publish the equivalent unescaped form.
    return pattern.replace('\\"', '"')


def common_document() -> dict[str, Any]:
    """``common.schema.json``: the definitions every other schema file shares."""
    leaks = [{"title": kind, "pattern": _ecma(p)} for kind, p in LEAK_PATTERNS.items()]
    return {
        "$schema": DIALECT,
        "$id": BASE_URI + COMMON,
        "title": "kerno-audit v1 common definitions",
        "description": "Definitions shared by the record schema and every details schema. "
        "Generated from kerno_otel/records/patterns.py by scripts/gen_schemas.py; do not edit.",
        "$defs": {
            "safe_text": {
                "description": "Text that must never carry raw IP addresses, PIDs, paths under "
                "sensitive roots (/home, /root, /Users, /run/user, /var/mail, /var/spool/mail, "
                "~/ and ~user/), "
                "e-mail addresses or secrets (bearer tokens, API keys, JWTs, private keys, "
                "password= forms, credentials in URLs). The producer redacts them to "
                "[REDACTED:<kind>] placeholders; a match of any pattern below is a leak.",
                "type": "string",
                "not": {"anyOf": leaks},
            },
            "name": {
                "description": "A short identifier: letters, digits and . _ + - (at most 128).",
                "$ref": "#/$defs/safe_text",
                "pattern": "^[A-Za-z0-9][A-Za-z0-9_.+-]{0,127}$",
            },
            "event_type": {
                "description": 'An event type name: dotted lowercase segments ("ai.call").',
                "type": "string",
                "pattern": TYPE_PATTERN,
            },
            "file_name": {
                "description": "A file's basename: no directory part.",
                "$ref": "#/$defs/safe_text",
                "pattern": "^[^/]+$",
            },
            "sha256": {
                "description": 'A SHA-256 digest: "sha256:" and 64 lowercase hex digits.',
                "type": "string",
                "pattern": "^sha256:[0-9a-f]{64}$",
            },
            "cycle_id": {
                "description": 'A doctor cycle: "cycle-", its UTC start (YYYYMMDD-HHMMSS) '
                'and, when several start in the same second, "-N".',
                "type": "string",
                "pattern": "^cycle-[0-9]{8}-[0-9]{6}(-[0-9]+)?$",
            },
            "redacted_ip": {
                "description": "The placeholder an IP address is always replaced by.",
                "const": "[REDACTED:ip]",
            },
        },
    }


def bundle_document(documents: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """``bundle.schema.json``: a 2020-12 compound schema holding every file of the set.

    Each file is embedded unchanged under ``$defs`` (keyed by its file name), so it keeps
    its ``$id`` and every relative ``$ref`` resolves inside the bundle: a validator given
    this one file needs no network, no ``--base-uri`` and no registry (JSON Schema
    2020-12, section 9.3, "Compound Documents").
    """
    return {
        "$schema": DIALECT,
        "$id": BASE_URI + BUNDLE,
        "title": "kerno-audit v1 record (bundled)",
        "description": "One line of a kerno audit log: record.schema.json with every file it "
        "refers to embedded, for validators given a single file. Generated by kerno-otel "
        "schema export; do not edit.",
        "$ref": RECORD,
        "$defs": {name: dict(doc) for name, doc in documents.items() if name != BUNDLE},
    }


def _actor_rule(event_type: EventType) -> dict[str, Any]:
    if event_type.actor.endswith("/"):
        # The actor prefix matches _ACTOR_PREFIX_PATTERN, where only "." is special.
        return {"pattern": "^" + event_type.actor.replace(".", "\\.")}
    return {"const": event_type.actor}


def record_document(types: Mapping[str, EventType]) -> dict[str, Any]:
    """``record.schema.json``: one whole line, dispatching ``details`` on ``type``."""
    ref = COMMON + "#/$defs/"
    return {
        "$schema": DIALECT,
        "$id": BASE_URI + RECORD,
        "title": "kerno-audit v1 record",
        "description": "One line of a kerno audit log. v, ts, type, actor and details are "
        "kerno's audit schema v1; the other fields are additive and optional, though "
        "kerno-otel's writer always writes seq, severity, outcome and prev. Generated from "
        "kerno_otel/records/catalogue.py by scripts/gen_schemas.py; do not edit.",
        "type": "object",
        "properties": {
            "v": {"description": 'Schema version, the string "1".', "const": "1"},
            "seq": {
                "description": "Position in the stream: 0 for the first record, then +1 per "
                "record across rotations. A gap is a loss.",
                "type": "integer",
                "minimum": 0,
            },
            "ts": {
                "description": "When the event happened: RFC 3339, UTC, nanoseconds.",
                "type": "string",
                "pattern": r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{9}Z$",
            },
            "type": {
                "description": "The event type; selects the details schema.",
                "type": "string",
                "pattern": TYPE_PATTERN,
                "enum": list(types),
            },
            "actor": {
                "description": 'The component that acted: "<area>/<component>".',
                "type": "string",
                "pattern": ACTOR_PATTERN,
            },
            "severity": {
                "description": "OpenTelemetry severity text.",
                "enum": list(SEVERITIES),
            },
            "outcome": {"description": "How the action ended.", "enum": list(OUTCOMES)},
            "details": {
                "description": "The event's payload; its schema is <type>.schema.json.",
                "type": "object",
            },
            "resource": {
                "description": "OpenTelemetry resource attributes of the emitting process "
                "(service.name, service.instance.id, host.name, ...).",
                "type": "object",
                "propertyNames": {"$ref": ref + "name"},
                "additionalProperties": {"$ref": ref + "safe_text"},
            },
            "trace_id": {
                "description": "Trace the event happened in: 32 lowercase hex digits.",
                "type": "string",
                "pattern": "^[0-9a-f]{32}$",
            },
            "span_id": {
                "description": "Span the event happened in: 16 lowercase hex digits.",
                "type": "string",
                "pattern": "^[0-9a-f]{16}$",
            },
            "prev": {
                "description": "SHA-256 of the exact bytes of the previous line, without its "
                "newline; 64 zeros for the first record of a stream.",
                "$ref": ref + "sha256",
            },
        },
        "required": ["v", "ts", "type", "actor", "details"],
        "additionalProperties": False,
        "allOf": [
            {
                "if": {"properties": {"type": {"const": name}}, "required": ["type"]},
                "then": {
                    "properties": {
                        "actor": _actor_rule(event_type),
                        "details": {"$ref": schema_file(name)},
                    }
                },
            }
            for name, event_type in types.items()
        ],
    }


def _typed_record_document(record: Mapping[str, Any], event_type: EventType) -> dict[str, Any]:
    """The record schema specialised to one type: what the hot path compiles."""
    doc = copy.deepcopy(dict(record))
    del doc["allOf"]
    doc["$id"] = BASE_URI + f"record+{event_type.name}.json"
    props = doc["properties"]
    props["type"] = {"const": event_type.name}
    rule = _actor_rule(event_type)
    if "pattern" in rule:
        # Both the generic actor pattern and the prefix, in one pattern.
        rule = {"pattern": rule["pattern"] + ACTOR_PATTERN[ACTOR_PATTERN.index("/") + 1 :]}
    props["actor"] = {"type": "string", **rule}
    props["details"] = {"$ref": schema_file(event_type.name)}
    return doc


def _builtin_dir() -> Path:
    package = Path(__file__).resolve().parent.parent
    # Inside a wheel the schemas sit in the package (pyproject's force-include);
    # in an editable install they are at the top of the repository.
    for root in (package, package.parent):
        candidate = root / "schemas" / "kerno-audit" / "v1"
        if (candidate / COMMON).is_file():
            return candidate
    raise FileNotFoundError(f"kerno-audit v1 schemas not found beside {package}")


def _load(path: Path) -> dict[str, Any]:
    with path.open(encoding="utf-8") as f:
        doc = json.load(f)
    if not isinstance(doc, dict):
        raise ValueError(f"{path}: a schema file must hold a JSON object")
    return doc


class SchemaSet:
    """The kerno-audit v1 schema set: the built-in types plus any plugin types."""

    def __init__(
        self,
        common: dict[str, Any],
        details: dict[str, dict[str, Any]],
        types: dict[str, EventType],
    ) -> None:
        self._common = common
        self._details = details
        self._types = types
        self._record = record_document(types)

    @classmethod
    def builtin(cls) -> SchemaSet:
        """The published set shipped with kerno-otel (loaded once)."""
        return _builtin_set()

    def with_types(self, extra: Mapping[str, EventType]) -> SchemaSet:
        """A new set with plugin event types added.

        Each type's ``schema`` is its ``details`` schema. Raises ValueError naming
        the type and the problem for a bad name, actor or schema, or a clash.
        """
        details = dict(self._details)
        types = dict(self._types)
        for name, event_type in extra.items():
            problem = type_problem(name, event_type, types)
            if problem is None:
                doc, problem = plugin_details(name, event_type)
            if problem is not None:
                raise ValueError(f"event type {name!r} from {event_type.source}: {problem}")
            details[name] = doc
            types[name] = event_type
        new = SchemaSet(self._common, details, types)
        for name in extra:
            # Compile each new details schema now so an unresolvable $ref or a
            # pattern the Rust engine cannot compile fails here, named.
            try:
                jsonschema_rs.validator_for(
                    details[name], registry=new._rs_registry(), offline=True
                )
            except (ValueError, jsonschema_rs.ReferencingError) as e:
                msg = f"event type {name!r} from {types[name].source}: schema does not compile"
                raise ValueError(f"{msg}: {e}") from None
        return new

    def types(self) -> list[str]:
        """Every event type in the set: built-ins in catalogue order, then plugin types."""
        return list(self._types)

    def event_type(self, name: str) -> EventType:
        """The catalogue entry of ``name`` (KeyError when unknown)."""
        return self._types[name]

    def documents(self) -> dict[str, dict[str, Any]]:
        """Every schema file of the set, by file name (copies: safe to change)."""
        docs = {COMMON: self._common, RECORD: self._record}
        docs.update((schema_file(n), d) for n, d in self._details.items())
        docs[BUNDLE] = bundle_document(docs)
        return copy.deepcopy(docs)

    def export(self, directory: Path) -> list[Path]:
        """Write every schema file into ``directory`` (created if needed); the paths written."""
        directory.mkdir(parents=True, exist_ok=True)
        written = []
        for name, doc in self.documents().items():
            path = directory / name
            tmp = directory / f".{name}.tmp"
            tmp.write_text(dumps(doc), encoding="utf-8")
            os.replace(tmp, path)
            written.append(path)
        return written

    def _rs_registry(self, *, fast: bool = False) -> jsonschema_rs.Registry:
        common = _fast_common(self._common) if fast else self._common
        docs = [common, *self._details.values()]
        return jsonschema_rs.Registry([(d["$id"], d) for d in docs])


def _fast_common(common: Mapping[str, Any]) -> dict[str, Any]:
    """``common`` with safe_text's leak patterns joined into one alternation.

    The same language (a search for any of the patterns matches iff a search for
    their alternation does), with one regex search per string instead of five. The
    published file keeps one pattern per kind so reviewers can read them.
    """
    fast = copy.deepcopy(dict(common))
    safe_text = fast["$defs"]["safe_text"]
    patterns = [alt["pattern"] for alt in safe_text["not"]["anyOf"]]
    safe_text["not"] = {"pattern": "|".join(f"(?:{p})" for p in patterns)}
    return fast


@functools.cache
def _builtin_set() -> SchemaSet:
    directory = _builtin_dir()
    common = _load(directory / COMMON)
    details = {name: _load(directory / schema_file(name)) for name in BUILTIN_TYPES}
    return SchemaSet(common, details, dict(BUILTIN_TYPES))
