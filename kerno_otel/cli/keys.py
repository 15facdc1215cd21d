"""``kerno-otel keys generate``: a checkpoint signing key pair."""

from __future__ import annotations

from pathlib import Path

import click

from kerno_otel.cli.app import UserError


@click.group()
def keys() -> None:
    """Signing keys for audit checkpoints."""


@keys.command()
@click.argument(
    "directory",
    type=click.Path(path_type=Path),
    help="Directory to write the key pair into (created 0700 if needed).",
)
def generate(directory: Path) -> None:
    """Generate an Ed25519 key pair for signed checkpoints in DIRECTORY.

    The private key (PKCS8 PEM, 0600) goes in audit.checkpoint.key_file; the public
    key (PEM, 0644) is what reviewers give to `audit verify --key`. Existing files
    are never overwritten.
    """
    from kerno_otel.audit.keys import KeyFileError
    from kerno_otel.audit.keys import generate as generate_keys

    try:
        pair = generate_keys(directory)
    except KeyFileError as e:
        raise UserError(str(e)) from None
    except OSError as e:
        raise UserError(f"{e.filename or directory}: {e.strerror}") from None
    click.echo(f"key id: {pair.key_id}")
    click.echo(f"private key: {pair.private_path}")
    click.echo(f"public key: {pair.public_path}")
