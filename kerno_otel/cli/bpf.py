"""``kerno-otel bpf``: the BPF programs plugins register."""

from __future__ import annotations

import json
import os
import sys

import click

from kerno_otel.cli.app import UserError


@click.group("bpf")
def bpf() -> None:
    """BPF programs: load them and check they read the kernel."""


@bpf.command("verify")
@click.option("--config", "config_path", metavar="FILE", help="Config file (as for run).")
@click.option(
    "--read",
    "read",
    metavar="DURATION",
    default="5s",
    show_default=True,
    help="How long to read the programs' maps once they are loaded.",
)
@click.option("--json", "as_json", is_flag=True, help="One JSON object on stdout.")
def verify_command(config_path: str | None, read: str, as_json: bool) -> None:
    """Load every BPF program, read for DURATION, report each one.

    Loads every program a plugin registers (whatever bpf.programs selects),
    each attempt recorded as a bpf.load audit record, then prints per program:
    loaded, tracepoints, events or samples counted while reading, events lost,
    load time. Exits 1 when any program failed to load.
    """
    from kerno_otel.audit.files import AuditFileError
    from kerno_otel.bpf.verify import verify
    from kerno_otel.config import ConfigError, parse_duration
    from kerno_otel.daemon.plugins import PluginLoadError

    try:
        seconds = parse_duration(read)
    except ValueError as e:
        raise UserError(f"--read: {e}") from None
    try:
        reports, path = verify(config_path, read_s=seconds, env=os.environ, stderr=sys.stderr)
    except (AuditFileError, ConfigError, PluginLoadError) as e:
        raise UserError(str(e)) from None
    failed = [r for r in reports if not r.loaded]
    if as_json:
        click.echo(
            json.dumps(
                {
                    "read_s": seconds,
                    "loaded": len(reports) - len(failed),
                    "failed": len(failed),
                    "programs": [r.to_json() for r in reports],
                }
            )
        )
    else:
        from rich.console import Console
        from rich.table import Table

        table = Table("program", "loaded", "tracepoints", "events", "lost", "load ms", "error")
        for r in reports:
            table.add_row(
                r.program,
                "yes" if r.loaded else "NO",
                ", ".join(r.tracepoints),
                "-" if r.events is None else str(r.events),
                "-" if r.lost is None else str(r.lost),
                f"{r.load_ms:.0f}",
                r.error or "",
            )
        Console(soft_wrap=True, width=None if sys.stdout.isatty() else 200).print(table)
    click.echo(
        f"{len(reports) - len(failed)}/{len(reports)} programs loaded; audit log {path}", err=True
    )
    if not reports:
        click.echo("kerno-otel: bpf: no plugin registers a BPF program", err=True)
    sys.exit(1 if failed or not reports else 0)
