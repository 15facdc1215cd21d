"""``kerno-otel run``: the daemon."""

from __future__ import annotations

import sys

import click

from kerno_otel.cli.app import UserError


@click.command()
@click.option(
    "--config",
    "config_path",
    metavar="FILE",
    help="Config file (default: $KERNO_CONFIG, /etc/kerno/kerno.yaml, ./kerno.yaml, "
    "else the embedded defaults).",
)
@click.option(
    "--duration",
    metavar="DURATION",
    help="Stop after this long (e.g. 30s, 5m); default: run until SIGTERM or SIGINT.",
)
@click.option(
    "--print-path",
    is_flag=True,
    help="Print the audit log's file path (from the config) on stdout and exit.",
)
def run(config_path: str | None, duration: str | None, print_path: bool) -> None:
    """Run the daemon: open the audit stream and keep it until stopped.

    SIGTERM and SIGINT stop it cleanly, with everything flushed to disk.
    """
    from kerno_otel.audit.files import AuditFileError
    from kerno_otel.config import ConfigError, load_config, parse_duration
    from kerno_otel.daemon.daemon import run as run_daemon
    from kerno_otel.daemon.plugins import PluginLoadError

    try:
        config = load_config(config_path)
    except ConfigError as e:
        raise UserError(str(e)) from None
    if print_path:
        click.echo(config.audit.file_path)
        return
    seconds = None
    if duration is not None:
        try:
            seconds = parse_duration(duration)
        except ValueError as e:
            raise UserError(f"--duration: {e}") from None
    try:
        code = run_daemon(config_path, duration=seconds, stderr=sys.stderr)
    except (AuditFileError, ConfigError, PluginLoadError) as e:
        raise UserError(str(e)) from None
    sys.exit(code)
