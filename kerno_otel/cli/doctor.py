"""``kerno-otel doctor``: one diagnosis cycle, printed as a table or JSON."""

from __future__ import annotations

import json
import os
import sys
from typing import TYPE_CHECKING

import click

from kerno_otel.cli.app import UserError

if TYPE_CHECKING:
    from kerno_otel.doctor.engine import CycleResult


@click.command("doctor")
@click.option("--config", "config_path", metavar="FILE", help="Config file (as for run).")
@click.option(
    "--duration",
    metavar="DURATION",
    help="How long to sample signals (1s to 5m; default: doctor.duration, 30s).",
)
@click.option(
    "-o",
    "--output",
    type=click.Choice(["pretty", "json"]),
    default="pretty",
    show_default=True,
    help="A table, or one JSON object on stdout.",
)
@click.option("--exit-code", is_flag=True, help="Exit 1 when any finding is WARNING or CRITICAL.")
@click.option(
    "--ai/--no-ai",
    default=None,
    help="Ask the analyzer plugin to explain the findings (default: ai.enabled).",
)
def doctor_command(
    config_path: str | None,
    duration: str | None,
    output: str,
    exit_code: bool,
    ai: bool | None,
) -> None:
    """Run one diagnosis cycle and print its findings.

    Samples the sources for DURATION, runs the rules, sends WARNING and
    CRITICAL findings to the sinks of doctor.sinks, and records each send as a
    finding.emit audit record, exactly like a cycle of the daemon. Findings
    are printed redacted.
    """
    from kerno_otel.audit.files import AuditFileError
    from kerno_otel.config import ConfigError
    from kerno_otel.daemon.plugins import PluginLoadError
    from kerno_otel.doctor.diagnose import diagnose

    try:
        result, path = diagnose(
            config_path, duration=duration, env=os.environ, stderr=sys.stderr, ai=ai
        )
    except (AuditFileError, ConfigError, PluginLoadError) as e:
        raise UserError(str(e)) from None
    for note in result.notes:
        click.echo(f"kerno-otel: doctor: {note}", err=True)
    if output == "json":
        click.echo(json.dumps(result.to_json(), ensure_ascii=False, default=str))
    else:
        _pretty(result)
    sent = len(result.deliveries)
    failed = sum(1 for d in result.deliveries if not d.delivered)
    click.echo(
        f"{result.cycle_id}: {len(result.findings)} findings, {sent} sent"
        + (f" ({failed} not delivered)" if failed else "")
        + f"; audit log {path}",
        err=True,
    )
    sys.exit(1 if exit_code and result.alerting else 0)


def _pretty(result: CycleResult) -> None:
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    styles = {"CRITICAL": "bold red", "WARNING": "yellow", "INFO": "dim"}
    order = {"CRITICAL": 0, "WARNING": 1, "INFO": 2}
    table = Table("severity", "rule", "finding", "evidence", title=result.cycle_id)
    for f in sorted(result.redacted, key=lambda f: order.get(f.severity, 3)):
        evidence = ", ".join(f"{k}={v}" for k, v in f.evidence.items())
        table.add_row(Text(f.severity, style=styles.get(f.severity, "")), f.rule, f.title, evidence)
    # Piped output is not cut to 80 columns: titles and evidence stay whole for grep.
    console = Console(soft_wrap=True, width=None if sys.stdout.isatty() else 200)
    console.print(table)
    if result.analysis is not None:
        console.print(Text(f"analysis ({result.analysis.provider}/{result.analysis.model}):"))
        console.print(Text(result.analysis.text))
