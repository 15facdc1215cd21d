"""``kerno-otel plugins``: the plugins that load, and those that fail to."""

from __future__ import annotations

import json
import os
import sys
from dataclasses import asdict

import click

from kerno_otel.cli.app import UserError


@click.command("plugins")
@click.option("--config", "config_path", metavar="FILE", help="Config file (as for run).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def plugins_command(config_path: str | None, as_json: bool) -> None:
    """List the plugins that load: name, distribution, version, hooks and event types.

    Plugins that fail to load, and contributions refused (an event type whose schema
    is not closed, a rule that is not callable), are reported on stderr (one line
    each) and in the JSON output under "failures", each with the hook and the reason.
    """
    from kerno_otel.config import ConfigError
    from kerno_otel.daemon.plugins import PluginLoadError, check_contributions, load_with_schemas

    try:
        host, _ = load_with_schemas(config_path, os.environ, sys.stderr)
        check_contributions(host)
    except (ConfigError, PluginLoadError) as e:
        raise UserError(str(e)) from None
    if as_json:
        failures = [
            {**{k: v for k, v in asdict(f).items() if k != "message"}, "reason": f.message}
            for f in host.failures
        ]
        document = {"plugins": [asdict(p) for p in host.plugins], "failures": failures}
        click.echo(json.dumps(document, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table("name", "distribution", "version", "hooks", "event types")
    for info in host.plugins:
        table.add_row(
            info.name,
            info.distribution,
            info.version,
            ", ".join(info.hooks),
            ", ".join(info.event_types) or "-",
        )
    Console(soft_wrap=True).print(table)
