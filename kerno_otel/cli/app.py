"""The root ``kerno-otel`` group and its error handling; each command group has its own module.

Data goes to stdout, diagnostics and progress to stderr. Exit codes: 0 success,
1 the thing checked is bad, 2 a usage or configuration error. User errors are one
``Error: ...`` line; ``KERNO_OTEL_DEBUG=1`` shows the traceback of unexpected ones.
"""

from __future__ import annotations

import os
import sys
from typing import Any

import click

from kerno_otel import __version__


class UserError(click.ClickException):
    """A usage or configuration error: one ``Error: ...`` line on stderr, exit 2."""

    exit_code = 2


class _Main(click.Group):
    """The top-level group: turns unexpected exceptions into one line unless debugging."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.ClickException, click.exceptions.Exit, click.Abort):
            raise
        except BrokenPipeError:
            # `kerno-otel audit validate big.jsonl | head`: the reader left; so do we.
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            ctx.exit(1)
        except Exception as e:
            if os.environ.get("KERNO_OTEL_DEBUG") == "1":
                raise
            raise click.ClickException(f"{type(e).__name__}: {e}") from e


@click.group(cls=_Main, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="kerno-otel", help="Show the version and exit.")
def main() -> None:
    """kerno-otel: a compliance-grade audit log built on OpenTelemetry.

    Set KERNO_OTEL_DEBUG=1 to see tracebacks of unexpected errors.
    """
