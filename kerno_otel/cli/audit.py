"""``kerno-otel audit validate|verify``: check a log against the schema, and that it is whole."""

from __future__ import annotations

import contextlib
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import click

from kerno_otel.cli import progress
from kerno_otel.cli.app import UserError
from kerno_otel.cli.schema import published_schemas
from kerno_otel.records.validate import RecordValidator, reference_check, reference_validator
from kerno_otel.verify.lines import Check, line_results
from kerno_otel.verify.reading import STDIN_NAME, check_readable, open_log
from kerno_otel.verify.report import Report


@click.group()
def audit() -> None:
    """Check and inspect audit logs."""


@audit.command()
@click.argument(
    "files", nargs=-1, required=True, metavar="FILE...", help="Audit log files or directories."
)
@click.option(
    "--reference",
    is_flag=True,
    help="Validate with python-jsonschema, the reference implementation (slower), "
    "instead of the fast jsonschema-rs validator.",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of lines.")
@click.option("--silent", is_flag=True, help="Do not show a progress bar, even on a terminal.")
def validate(files: tuple[str, ...], reference: bool, as_json: bool, silent: bool) -> None:
    """Check every line of FILE... against the audit record schema.

    Prints FILE:LINE: reason for each bad line (the reason names the event type,
    the JSON pointer and the rule broken, never the value), then a summary on
    stderr; with --json, one JSON object on stdout instead of the lines. "-" reads
    standard input; gzip files (.gz) are read transparently; a directory stands
    for its *.jsonl, *.jsonl.gz and logrotate's *.jsonl.N[.gz] files, in chain
    order. Exits 0 when every line is valid, 1 when any is not.
    """
    names = _expand(files)
    for name in names:
        _check_readable(name)
    schemas = published_schemas()
    check: Check
    if reference:
        validator = reference_validator(schemas)
        check = lambda record: reference_check(validator, record)  # noqa: E731
    else:
        check = RecordValidator(schemas).check

    lines = invalid = 0
    bad: list[dict[str, Any]] = []
    with progress.Progress(progress.wanted(silent)) as bar:
        for name in names:
            display = STDIN_NAME if name == "-" else name
            with _open_log(name) as (stream, raw):
                bar.start(display, raw)
                for lineno, reason in line_results(stream, check):
                    lines += 1
                    if reason is not None:
                        invalid += 1
                        if as_json:
                            bad.append({"file": display, "line": lineno, "reason": reason})
                        else:
                            click.echo(f"{display}:{lineno}: {reason}")
                    if lines % progress.EVERY == 0:
                        bar.update()
                bar.update()
    shown = [STDIN_NAME if n == "-" else n for n in names]
    if as_json:
        document = {
            "valid": not invalid,
            "files": shown,
            "lines": lines,
            "invalid": invalid,
            "problems": bad,
        }
        click.echo(json.dumps(document, ensure_ascii=False))
    files_word = "file" if len(names) == 1 else "files"
    lines_word = "line" if lines == 1 else "lines"
    verdict = f"{invalid:,} invalid" if invalid else "all valid"
    summary = f"checked {lines:,} {lines_word} in {len(names):,} {files_word}: {verdict}"
    click.echo(summary, err=True)
    sys.exit(1 if invalid else 0)


def _expand(names: tuple[str, ...]) -> list[str]:
    """The files to validate: a directory stands for its log files, in chain order."""
    from kerno_otel.verify.order import VerifyError, chain_order, collect, describe

    out: list[str] = []
    for name in names:
        if name != "-" and os.path.isdir(name):
            try:
                found, _ = collect([name])
            except VerifyError:
                raise UserError(
                    f"{name}: no audit log files (*.jsonl, *.jsonl.gz) in this directory"
                ) from None
            out.extend(f.display for f in chain_order([describe(p) for p in found]))
        else:
            out.append(name)
    return out


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
    them (its *.jsonl, *.jsonl.gz and *.jsonl.N[.gz] files); files are put in
    chain order, not name order. A directory holding two streams has each verified on its own.
    PATH can also be an evidence bundle (FILE.tar.gz, from `audit bundle`):
    its files are checked against its SHA256SUMS, then its logs and report. Prints FILE:LINE: seq N:
    KIND: explanation per problem, then a summary on stderr (with --json: one JSON
    object on stdout). Kinds: modified, inserted, deleted, reordered, truncated,
    file-missing, bad-signature, unknown-key, torn-line. Exits 0 only when intact,
    1 when damaged, 2 on usage errors.
    """
    from kerno_otel.cli.review import load_key, verify_bundle
    from kerno_otel.verify.verify import VerifyError, verify_streams

    if len(paths) == 1 and paths[0].endswith((".tar.gz", ".tgz")) and os.path.isfile(paths[0]):
        if checkpoints_path is not None:
            raise UserError("--checkpoints: a bundle carries its own checkpoints files")
        verify_bundle(Path(paths[0]), key_path, as_json)
    public = load_key(key_path)
    if checkpoints_path is not None and not os.path.isfile(checkpoints_path):
        raise UserError(f"--checkpoints: {checkpoints_path}: No such file")
    with progress.Progress(progress.wanted(silent)) as bar:
        try:
            reports = verify_streams(
                paths, public_key=public, checkpoints=checkpoints_path, progress=bar.stage("verify")
            )
        except VerifyError as e:
            raise UserError(str(e)) from None
    intact = all(r.intact for r in reports)
    if as_json:
        click.echo(json.dumps(_streams_json(reports), ensure_ascii=False))
    else:
        for report in reports:
            for p in report.problems:
                seq = "?" if p.seq is None else p.seq
                click.echo(f"{p.file}:{p.line}: seq {seq}: {p.kind}: {p.explanation}")
    if len(reports) > 1:
        click.echo(
            f"{len(reports)} streams found (each verified on its own, with its own checkpoints)",
            err=True,
        )
    for report in reports:
        for note in report.not_checked:
            click.echo(f"not checked: {note}", err=True)
        files_word = "file" if len(report.files) == 1 else "files"
        count = len(report.problems)
        noun = "problem" if count == 1 else "problems"
        verdict = "intact" if report.intact else f"{count:,} {noun}"
        which = f"stream {report.stream}: " if len(reports) > 1 else ""
        click.echo(
            f"{which}verified {report.records:,} records in {len(report.files):,} {files_word}, "
            f"{report.checkpoints_checked:,} checkpoints: {verdict}",
            err=True,
        )
    sys.exit(0 if intact else 1)


def _streams_json(reports: list[Report]) -> dict[str, Any]:
    """One stream: its report as before. Several: the same fields over all streams (those
    that only mean something per stream are null) and ``streams``, one report each."""
    if len(reports) == 1:
        return {**reports[0].to_json(), "streams": [reports[0].to_json()]}
    return {
        "intact": all(r.intact for r in reports),
        "files": [f for r in reports for f in r.files],
        "records": sum(r.records for r in reports),
        "first_seq": None,
        "last_seq": None,
        "stream": None,
        "checkpoints_file": None,
        "checkpoints_checked": sum(r.checkpoints_checked for r in reports),
        "problems": [p.to_json() for r in reports for p in r.problems],
        "not_checked": [n for r in reports for n in r.not_checked],
        "streams": [r.to_json() for r in reports],
    }
