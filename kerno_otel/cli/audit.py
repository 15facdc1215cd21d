"""``kerno-otel audit validate|verify``: check a log against the schema, and that it is whole."""

from __future__ import annotations

import contextlib
import json
import os
import sys
from collections.abc import Iterator
from typing import IO

import click

from kerno_otel.cli import progress
from kerno_otel.cli.app import UserError
from kerno_otel.cli.schema import published_schemas
from kerno_otel.records.validate import RecordValidator, reference_check, reference_validator
from kerno_otel.verify.lines import Check, line_results
from kerno_otel.verify.reading import STDIN_NAME, check_readable, open_log


@click.group()
def audit() -> None:
    """Check and inspect audit logs."""


@audit.command()
@click.argument("files", nargs=-1, required=True, metavar="FILE...", help="Audit log files.")
@click.option(
    "--reference",
    is_flag=True,
    help="Validate with python-jsonschema, the reference implementation (slower), "
    "instead of the fast jsonschema-rs validator.",
)
@click.option("--silent", is_flag=True, help="Do not show a progress bar, even on a terminal.")
def validate(files: tuple[str, ...], reference: bool, silent: bool) -> None:
    """Check every line of FILE... against the audit record schema.

    Prints FILE:LINE: reason for each bad line (the reason names the event type,
    the JSON pointer and the rule broken, never the value), then a summary on
    stderr. "-" reads standard input; gzip files (.gz) are read transparently.
    Exits 0 when every line is valid, 1 when any is not.
    """
    for name in files:
        _check_readable(name)
    schemas = published_schemas()
    check: Check
    if reference:
        validator = reference_validator(schemas)
        check = lambda record: reference_check(validator, record)  # noqa: E731
    else:
        check = RecordValidator(schemas).check

    lines = invalid = 0
    with progress.Progress(progress.wanted(silent)) as bar:
        for name in files:
            display = STDIN_NAME if name == "-" else name
            with _open_log(name) as (stream, raw):
                bar.start(display, raw)
                for lineno, reason in line_results(stream, check):
                    lines += 1
                    if reason is not None:
                        invalid += 1
                        click.echo(f"{display}:{lineno}: {reason}")
                    if lines % progress.EVERY == 0:
                        bar.update()
                bar.update()
    files_word = "file" if len(files) == 1 else "files"
    lines_word = "line" if lines == 1 else "lines"
    verdict = f"{invalid:,} invalid" if invalid else "all valid"
    summary = f"checked {lines:,} {lines_word} in {len(files):,} {files_word}: {verdict}"
    click.echo(summary, err=True)
    sys.exit(1 if invalid else 0)


def _check_readable(name: str) -> None:
    """Fail before any output when an input cannot be opened (exit 2, one line)."""
    try:
        check_readable(name)
    except OSError as e:
        raise UserError(f"{name}: {e.strerror}") from None


@contextlib.contextmanager
def _open_log(name: str) -> Iterator[tuple[IO[bytes], IO[bytes]]]:
    """:func:`kerno_otel.verify.reading.open_log`, with an unopenable file as a usage error."""
    with contextlib.ExitStack() as stack:
        try:
            streams = stack.enter_context(open_log(name))
        except OSError as e:
            raise UserError(f"{name}: {e.strerror}") from None
        yield streams


@audit.command()
@click.argument(
    "paths", nargs=-1, required=True, metavar="PATH...", help="Log files or directories."
)
@click.option(
    "--key",
    "key_path",
    metavar="PUB",
    help="The checkpoint public key (PEM); without it signatures and truncation are not checked.",
)
@click.option(
    "--checkpoints",
    "checkpoints_path",
    metavar="FILE",
    help="The checkpoints file, e.g. the off-host copy (default: <live file>.checkpoints).",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of lines.")
@click.option("--silent", is_flag=True, help="Do not show a progress bar, even on a terminal.")
def verify(
    paths: tuple[str, ...],
    key_path: str | None,
    checkpoints_path: str | None,
    as_json: bool,
    silent: bool,
) -> None:
    """Check that the stream in PATH... is whole: chain, seq, checkpoints, truncation.

    PATH is the live file, rotated files (plain or .gz) or a directory holding
    them (its *.jsonl and *.jsonl.gz files); files are put in chain order, not
    name order. Prints FILE:LINE: seq N:
    KIND: explanation per problem, then a summary on stderr (with --json: one JSON
    object on stdout). Kinds: modified, inserted, deleted, reordered, truncated,
    file-missing, bad-signature, unknown-key, torn-line. Exits 0 only when intact,
    1 when damaged, 2 on usage errors.
    """
    from kerno_otel.audit.keys import KeyFileError, load_public
    from kerno_otel.verify.verify import VerifyError
    from kerno_otel.verify.verify import verify as verify_log

    public = None
    if key_path is not None:
        try:
            public = load_public(key_path)
        except KeyFileError as e:
            raise UserError(f"--key: {e}") from None
    if checkpoints_path is not None and not os.path.isfile(checkpoints_path):
        raise UserError(f"--checkpoints: {checkpoints_path}: No such file")
    with progress.Progress(progress.wanted(silent)) as bar:

        def advance(done: int, total: int) -> None:
            if done == 0:
                bar.track("verify", total)
            else:
                bar.advance_to(done)

        try:
            report = verify_log(
                paths, public_key=public, checkpoints=checkpoints_path, progress=advance
            )
        except VerifyError as e:
            raise UserError(str(e)) from None
    if as_json:
        click.echo(json.dumps(report.to_json(), ensure_ascii=False))
    else:
        for p in report.problems:
            seq = "?" if p.seq is None else p.seq
            click.echo(f"{p.file}:{p.line}: seq {seq}: {p.kind}: {p.explanation}")
    for note in report.not_checked:
        click.echo(f"not checked: {note}", err=True)
    files_word = "file" if len(report.files) == 1 else "files"
    count = len(report.problems)
    noun = "problem" if count == 1 else "problems"
    verdict = "intact" if report.intact else f"{count:,} {noun}"
    click.echo(
        f"verified {report.records:,} records in {len(report.files):,} {files_word}, "
        f"{report.checkpoints_checked:,} checkpoints: {verdict}",
        err=True,
    )
    sys.exit(0 if report.intact else 1)
