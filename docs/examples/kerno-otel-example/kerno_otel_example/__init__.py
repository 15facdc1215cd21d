"""Example kerno-otel plugin: contributes ``example.export`` and a ``ticket`` redaction rule."""

from __future__ import annotations

from collections.abc import Callable

from kerno_otel import EventType, RedactionRule, hookimpl
from kerno_otel.hookspecs import DaemonContext

EXPORT = EventType(
    "example.export",
    "example/exporter",
    schema={
        "type": "object",
        "additionalProperties": False,
        "required": ["destination", "records"],
        "properties": {
            "destination": {
                "description": "Where the export went (free text, scrubbed).",
                "$ref": "common.schema.json#/$defs/safe_text",
            },
            "records": {"description": "How many records were exported.", "type": "integer"},
        },
    },
)


@hookimpl
def register_event_types(register: Callable[[EventType], None]) -> None:
    register(EXPORT)


@hookimpl
def register_redaction_rules(register: Callable[[RedactionRule], None]) -> None:
    register(RedactionRule("ticket", r"TICKET-[0-9]+"))


@hookimpl
def daemon_startup(context: DaemonContext) -> None:
    context.audit.emit(
        "example.export",
        details={"destination": "s3 bucket for TICKET-4242 via 10.0.0.7", "records": 3},
    )
