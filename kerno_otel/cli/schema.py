"""``kerno-otel schema export|show``: the published audit record schemas."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import click

from kerno_otel.cli.app import UserError
from kerno_otel.records.naming import schema_file
from kerno_otel.records.schema import RECORD, SchemaSet


def published_schemas() -> SchemaSet:
    """The published schema set: built-ins plus the event types of the plugins that load."""
    from kerno_otel.config import ConfigError
    from kerno_otel.daemon.plugins import PluginLoadError, load_with_schemas

    try:
        return load_with_schemas(None, os.environ, sys.stderr)[1]
    except (ConfigError, PluginLoadError) as e:
        raise UserError(str(e)) from None


@click.group()
def schema() -> None:
    """The published audit record schemas (JSON Schema 2020-12)."""


@schema.command()
@click.argument(
    "directory",
    type=click.Path(path_type=Path),
    help="Directory to write into (created if needed).",
)
def export(directory: Path) -> None:
    """Write the published schema files into DIRECTORY and list the files written.

    Give the directory to any JSON Schema 2020-12 validator: record.schema.json
    refers to the others by relative $ref.
    """
    try:
        written = published_schemas().export(directory)
    except OSError as e:
        raise UserError(f"{e.filename or directory}: {e.strerror}") from None
    for path in written:
        click.echo(str(path))


@schema.command()
@click.argument("type_name", metavar="[TYPE]", required=False, help="An event type, e.g. ai.call.")
def show(type_name: str | None) -> None:
    """Print the record schema, or the details schema of event type TYPE, as JSON."""
    schemas = published_schemas()
    if type_name is None:
        name = RECORD
    elif type_name in schemas.types():
        name = schema_file(type_name)
    else:
        known = ", ".join(schemas.types())
        raise UserError(f"unknown event type {type_name!r} (known: {known})")
    click.echo(json.dumps(schemas.documents()[name], indent=2, ensure_ascii=False))
