"""The validate stage: records checked against their type's schema, with value-free reasons.

:class:`RecordValidator` is the audit pipeline's validate stage and the engine
behind ``kerno-otel audit validate``: one compiled jsonschema-rs validator per
event type, so a record is checked against its own type's schema only. Its
reasons name the type, the JSON pointer and the rule, never the value: the value
may be the very secret the schema just caught. :func:`reference_validator` is the
python-jsonschema reference implementation over the same documents.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from decimal import Decimal
from typing import Any, Final

import jsonschema_rs

from kerno_otel.records.catalogue import OUTCOMES, SEVERITIES
from kerno_otel.records.naming import DIALECT, pointer, schema_file, type_name_ok
from kerno_otel.records.patterns import find_leak
from kerno_otel.records.schema import BUNDLE, RECORD, SchemaSet, _typed_record_document

# Deeper than this is reported, not walked (jsonschema-rs gives up sooner).
_MAX_DEPTH: Final = 32


def _type_label(record: Any) -> str:
    rtype = record.get("type") if isinstance(record, Mapping) else None
    if rtype is None:
        return "(no type)"
    # Known types pass these tests too (with_types enforces them); an unknown
    # type is shown only when it cannot be hiding a value.
    if isinstance(rtype, str) and type_name_ok(rtype):
        return rtype
    return "(invalid type)"


def _quote(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


def _leak_hint(instance: Any) -> str:
    kind = find_leak(instance) if isinstance(instance, str) else None
    # The kind's name, never the text that matched.
    return f" (matches leak pattern {_quote(kind)})" if kind is not None else ""


def _hint(keyword: str, path: list[str | int], instance: Any, schema_value: Any) -> str:
    """What to add after the rule, from the schema side only (never the instance's value)."""
    if keyword in ("required", "dependentRequired") and isinstance(schema_value, str):
        return f" (missing {_quote(schema_value)})"
    if keyword == "type":
        types = [schema_value] if isinstance(schema_value, str) else list(schema_value)
        return f" (expected {' or '.join(types)})"
    if keyword == "const":
        return f" (expected {_quote(schema_value)})"
    if keyword == "enum":
        if path == ["type"]:
            return " (unknown event type)"
        return f" (expected one of {', '.join(_quote(v) for v in schema_value)})"
    if keyword == "additionalProperties":
        return " (unexpected property)"
    if keyword in ("not", "propertyNames"):
        return _leak_hint(instance)
    return ""


def _reason(label: str, path: list[str | int], keyword: str, hint: str = "") -> str:
    return f"{label}: {pointer(path)}: '{keyword}' rule failed{hint}"


def _rs_reason(error: jsonschema_rs.ValidationError, label: str) -> str:
    kinds = jsonschema_rs.ValidationErrorKind
    kind = error.kind
    keyword = kind.name
    instance: Any = error.instance
    schema_value: Any = None
    if isinstance(kind, kinds.Required):
        schema_value = kind.property
        # jsonschema-rs names dependentRequired failures "required" too.
        keyword = next((p for p in reversed(error.schema_path) if isinstance(p, str)), keyword)
    elif isinstance(kind, kinds.Type):
        schema_value = kind.types
    elif isinstance(kind, kinds.Constant):
        schema_value = kind.expected_value
    elif isinstance(kind, kinds.Enum):
        schema_value = kind.options
    elif isinstance(kind, kinds.PropertyNames):
        instance = kind.error.instance  # the offending key: looked at, never shown
    path = list(error.instance_path)
    return _reason(label, path, keyword, _hint(keyword, path, instance, schema_value))


def _find_non_json(value: Any, path: list[str | int]) -> tuple[list[str | int], str] | None:
    """Where ``value`` stops being JSON, and what is there (a type name, never a value)."""
    if value is None or isinstance(value, str | bool | int | float | Decimal):
        return None
    if len(path) >= _MAX_DEPTH:
        return path, "nested too deeply"
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                return path, f"object key is not a string ({type(key).__name__})"
            found = _find_non_json(item, [*path, key])
            if found is not None:
                return found
        return None
    if isinstance(value, list | tuple):
        for index, item in enumerate(value):
            found = _find_non_json(item, [*path, index])
            if found is not None:
                return found
        return None
    return path, f"not a JSON value ({type(value).__name__})"


class RecordValidator:
    """Checks whole records against the schema of their own type (the pipeline's validate stage)."""

    def __init__(self, schemas: SchemaSet) -> None:
        documents = schemas.documents()
        record = documents[RECORD]
        registry = schemas._rs_registry(fast=True)
        self._types = {name: schemas.event_type(name) for name in schemas.types()}
        self._by_type = {
            name: jsonschema_rs.validator_for(
                _typed_record_document(record, event_type), registry=registry, offline=True
            )
            for name, event_type in self._types.items()
        }
        # Unknown or missing types: the whole record schema, which rejects them on
        # "type" (and reports anything else wrong with the envelope).
        self._any = jsonschema_rs.validator_for(record, registry=registry, offline=True)
        # The pipeline's fast path: `details` alone against its type's schema (the
        # envelope checks are a handful of set lookups, see check_envelope_built).
        self._details = {
            name: jsonschema_rs.validator_for(
                {"$schema": DIALECT, "$ref": documents[schema_file(name)]["$id"]},
                registry=registry,
                offline=True,
            )
            for name in self._types
        }
        self._severities = frozenset(SEVERITIES)
        self._outcomes = frozenset(OUTCOMES)

    def knows(self, name: object) -> bool:
        """Whether ``name`` is an event type of this validator's schema set."""
        return type(name) is str and name in self._types

    def check_built(self, record: dict[str, Any]) -> str | None:
        """:meth:`check` for records the audit processor built itself (the hot path).

        The processor formats ``v``, ``seq``, ``ts``, ``trace_id``, ``span_id`` and
        ``prev`` itself and checks ``resource`` once, with :meth:`check`, when the
        stream opens; what a producer controls is checked here: ``type`` known,
        ``actor`` allowed for it, ``severity`` and ``outcome`` in their enums and
        ``details`` against its type's schema. Any doubt falls back to the full
        :meth:`check`, which also words the reason, so the verdict is the same.
        """
        try:
            name = record["type"]
            event_type = self._types.get(name) if type(name) is str else None
            actor = record["actor"]
            if (
                event_type is not None
                and type(actor) is str
                and event_type.actor_ok(actor)
                and record["severity"] in self._severities
                and record["outcome"] in self._outcomes
                and type(record["details"]) is dict
                and self._details[name].is_valid(record["details"])
            ):
                return None
        except Exception:
            pass
        return self.check(record)

    def check(self, record: Mapping[str, Any]) -> str | None:
        """None when ``record`` is valid, else one line naming type, JSON pointer and rule.

        The reason never contains a value from the record. Never raises.
        """
        try:
            if type(record) is not dict:
                record = dict(record) if isinstance(record, Mapping) else record
            rtype = record.get("type") if type(record) is dict else None
            validator = self._by_type.get(rtype, self._any) if type(rtype) is str else self._any
            if validator.is_valid(record):
                return None
            error = next(iter(validator.iter_errors(record)), None)
        except Exception as e:  # the validate stage never raises into the pipeline
            # jsonschema-rs refuses what JSON cannot carry (bytes, sets, int keys,
            # very deep nesting): find where, without showing it.
            return _unvalidatable(record, e)
        label = _type_label(record)
        if error is None:  # pragma: no cover - is_valid and iter_errors disagree
            return f"{label}: (root): invalid"
        return _rs_reason(error, label)


def _unvalidatable(record: Any, error: Exception) -> str:
    try:
        label = _type_label(record)
        found = _find_non_json(record, [])
    except Exception:  # a hostile Mapping: say so and move on
        return f"(invalid type): (root): cannot be validated ({type(error).__name__})"
    if found is None:
        return f"{label}: (root): cannot be validated ({type(error).__name__})"
    return f"{label}: {pointer(found[0])}: {found[1]}"


def reference_validator(schemas: SchemaSet) -> Any:
    """python-jsonschema's Draft202012Validator for record.schema.json, over the whole set.

    The reference implementation: slower, but independent of jsonschema-rs, so
    tests and ``audit validate --reference`` can cross-check the fast path.
    """
    from jsonschema import Draft202012Validator
    from referencing import Registry, Resource

    docs = schemas.documents()
    registry: Registry[Any] = Registry().with_resources(
        # The bundle embeds the same resources again: the files alone make the registry.
        (doc["$id"], Resource.from_contents(doc))
        for name, doc in docs.items()
        if name != BUNDLE
    )
    return Draft202012Validator(docs[RECORD], registry=registry)


def reference_check(validator: Any, record: Any) -> str | None:
    """Like :meth:`RecordValidator.check`, with a :func:`reference_validator`.

    The same reason format; which of several errors is reported may differ.
    """
    from jsonschema.exceptions import best_match

    label = _type_label(record)
    try:
        error = best_match(validator.iter_errors(record))
    except Exception as e:  # the reference library's failures are not ours to raise
        return f"{label}: (root): cannot be validated ({type(e).__name__})"
    if error is None:
        return None
    keyword = str(error.validator)
    path = list(error.absolute_path)
    schema_value = error.validator_value
    instance = error.instance
    if "propertyNames" in error.absolute_schema_path:
        # python-jsonschema reports the rule inside propertyNames; jsonschema-rs
        # (and the reader) want to know it was a key that failed.
        keyword = "propertyNames"
    elif keyword == "required":
        present = instance if isinstance(instance, Mapping) else {}
        schema_value = next((p for p in schema_value if p not in present), None)
    elif keyword == "dependentRequired":
        present = instance if isinstance(instance, Mapping) else {}
        needed = (d for p, deps in schema_value.items() if p in present for d in deps)
        schema_value = next((d for d in needed if d not in present), None)
    return _reason(label, path, keyword, _hint(keyword, path, instance, schema_value))
