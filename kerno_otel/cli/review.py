"""``kerno-otel audit query|report|bundle``: the reviewer's commands (parsing and rendering)."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click

from kerno_otel.cli import progress
from kerno_otel.cli.app import UserError

_PATHS = click.argument(
    "paths", nargs=-1, required=True, metavar="PATH...", help="Log files or directories."
)
_SILENT = click.option(
    "--silent", is_flag=True, help="Do not show a progress bar, even on a terminal."
)


def _source(paths: tuple[str, ...]) -> Any:
    from kerno_otel.review.reading import Source
    from kerno_otel.verify.order import VerifyError

    try:
        return Source.open(paths)
    except VerifyError as e:
        raise UserError(str(e)) from None


@click.command()
@_PATHS
@click.option(
    "--type",
    "types",
    multiple=True,
    metavar="T",
    help="Event type, e.g. ai.call; audit.* for a family. Repeat for either.",
)
@click.option(
    "--actor",
    "actors",
    multiple=True,
    metavar="A",
    help="Actor, e.g. ai/analyzer; config/* for a prefix. Repeat for either.",
)
@click.option(
    "--outcome",
    "outcomes",
    multiple=True,
    metavar="O",
    help="success, failure or unknown. Repeat for either.",
)
@click.option(
    "--since",
    metavar="TS",
    help="Records at or after this time (RFC 3339 or a date; no zone means UTC).",
)
@click.option("--until", metavar="TS", help="Records before this time (same forms as --since).")
@click.option(
    "--cycle-id",
    "cycle_ids",
    multiple=True,
    metavar="C",
    help="details.cycle_id, linking a doctor cycle's ai.call and finding.emit records.",
)
@click.option("--seq-range", metavar="A-B", help="Records with seq A to B, both included (A-, -B).")
@click.option(
    "--where",
    "where",
    multiple=True,
    metavar="details.F=V",
    help="A details field (dotted path) equal to V; an array matches when an element "
    "does. Repeat: all must hold.",
)
@click.option("--json", "fmt", flag_value="json", help="Print one JSON array of the records.")
@click.option(
    "--nl", "fmt", flag_value="nl", help="Print the matching lines exactly as written (NDJSON)."
)
@click.option("--table", "fmt", flag_value="table", help="Print a table.")
@_SILENT
def query(
    paths: tuple[str, ...],
    types: tuple[str, ...],
    actors: tuple[str, ...],
    outcomes: tuple[str, ...],
    since: str | None,
    until: str | None,
    cycle_ids: tuple[str, ...],
    seq_range: str | None,
    where: tuple[str, ...],
    fmt: str | None,
    silent: bool,
) -> None:
    """Print the records of PATH... that match every filter, in chain order.

    PATH is a log file (plain or .gz) or a directory holding a log's files; rotated
    files are read in chain order, stream after stream. Filters of one kind are
    alternatives; filters of different kinds must all hold. Output: a table on a
    terminal, the lines as written (--nl) otherwise. Exits 0 when a record matched,
    1 when none did, 2 on a bad filter or path.
    """
    from kerno_otel.review.query import FilterError, Filters, Tally, run
    from kerno_otel.review.reading import ReadError

    try:
        filters = Filters.parse(
            types=types,
            actors=actors,
            outcomes=outcomes,
            since=since,
            until=until,
            cycle_ids=cycle_ids,
            seq_range=seq_range,
            where=where,
        )
    except FilterError as e:
        raise UserError(str(e)) from None
    source = _source(paths)
    fmt = fmt or ("table" if sys.stdout.isatty() else "nl")
    tally = Tally()
    with progress.Progress(progress.wanted(silent)) as bar:
        advance = bar.stage("query")
        total = source.total_bytes
        matches = run(source, filters, tally, lambda done: advance(done, total))
        try:
            _print_matches(fmt, matches)
        except ReadError as e:
            raise UserError(str(e)) from None
    for name, line in tally.not_records[:10]:
        click.echo(f"{name}:{line}: not a record (skipped)", err=True)
    click.echo(
        f"matched {tally.matched:,} of {tally.records:,} records in {len(source.files):,} "
        f"file{'s' if len(source.files) != 1 else ''}",
        err=True,
    )
    sys.exit(0 if tally.matched else 1)


def _print_matches(fmt: str, matches: Iterator[Any]) -> None:
    out = sys.stdout.buffer
    if fmt == "table":
        from rich.console import Console

        from kerno_otel.review.tables import query_table

        # Piped into a file or a pager, rows are not cut to 80 columns.
        width = None if sys.stdout.isatty() else 200
        query_table((m.record for m in matches), Console(width=width))
        return
    if fmt == "nl":
        chunk: list[bytes] = []
        for m in matches:
            chunk.append(m.raw)
            if len(chunk) >= 4096:
                out.write(b"\n".join(chunk) + b"\n")
                chunk.clear()
        if chunk:
            out.write(b"\n".join(chunk) + b"\n")
        out.flush()
        return
    out.write(b"[")
    sep = b"\n"
    for m in matches:
        out.write(sep + m.raw)
        sep = b",\n"
    out.write(b"\n]\n" if sep != b"\n" else b"]\n")
    out.flush()


@click.command()
@_PATHS
@click.option(
    "--key",
    "key_path",
    metavar="PUB",
    help="The checkpoint public key (PEM): checks signatures and truncation.",
)
@click.option(
    "--checkpoints",
    "checkpoints_path",
    metavar="FILE",
    help="The checkpoints file, e.g. the off-host copy (default: <live>.checkpoints).",
)
@click.option(
    "--html",
    "html_path",
    metavar="FILE",
    type=click.Path(path_type=Path),
    help="Also write a self-contained HTML page (no network) to FILE.",
)
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="Print the report as one JSON object (stable: diff two reports).",
)
@_SILENT
def report(
    paths: tuple[str, ...],
    key_path: str | None,
    checkpoints_path: str | None,
    html_path: Path | None,
    as_json: bool,
    silent: bool,
) -> None:
    """Summarize the log in PATH... for a reviewer, with the verify verdict.

    Counts per type and outcome, time range, streams, restarts and crashes, the live
    file renamed or removed by someone else, losses,
    auth failures, AI calls, findings, BPF loads, config reloads, and the controls
    the records are evidence for (SOC 2 CC7.2, ISO 27001:2022 A.8.15, HIPAA
    164.312(b)). Tables on stdout, or --json; --html writes a page to open anywhere.
    Exits 0 when verify finds the log intact, 1 when damaged, 2 on usage errors.
    """
    from rich.console import Console

    from kerno_otel.review.tables import render_report

    data = make_report(paths, key_path, checkpoints_path, silent)
    if html_path is not None:
        from kerno_otel.review.html import render

        try:
            html_path.write_text(render(data), encoding="utf-8")
        except OSError as e:
            raise UserError(f"--html: {html_path}: {e.strerror}") from None
        click.echo(f"wrote {html_path}", err=True)
    if as_json:
        click.echo(dumps(data))
    else:
        render_report(data, Console())
    sys.exit(0 if data["verdict"]["intact"] else 1)


def dumps(data: dict[str, Any]) -> str:
    """The report's JSON text: indented so that a diff of two reports reads line by line."""
    return json.dumps(data, indent=2, ensure_ascii=False)


def make_report(
    paths: tuple[str, ...] | list[str],
    key_path: str | None,
    checkpoints_path: str | None,
    silent: bool,
) -> dict[str, Any]:
    """Verify, summarize and build the report's dict; user errors become :class:`UserError`."""
    from kerno_otel.review.reading import ReadError
    from kerno_otel.review.report import report_of
    from kerno_otel.verify.order import VerifyError

    public = load_key(key_path)
    if checkpoints_path is not None and not Path(checkpoints_path).is_file():
        raise UserError(f"--checkpoints: {checkpoints_path}: No such file")
    with progress.Progress(progress.wanted(silent)) as bar:
        try:
            return report_of(
                paths,
                public,
                checkpoints_path,
                verify_progress=bar.stage("verify"),
                read_progress=bar.stage("report"),
            )
        except (VerifyError, ReadError) as e:
            raise UserError(str(e)) from None


def load_key(key_path: str | None) -> Any:
    from kerno_otel.audit.keys import KeyFileError, load_public

    if key_path is None:
        return None
    try:
        return load_public(key_path)
    except KeyFileError as e:
        raise UserError(f"--key: {e}") from None


@click.command()
@_PATHS
@click.option(
    "--key",
    "key_path",
    metavar="PUB",
    required=True,
    help="The checkpoint public key (PEM), put in the bundle for the reviewer.",
)
@click.option(
    "-o",
    "--output",
    "output",
    metavar="FILE.tar.gz",
    required=True,
    type=click.Path(path_type=Path),
    help="The bundle to write.",
)
def bundle(paths: tuple[str, ...], key_path: str, output: Path) -> None:
    """Write an evidence bundle of the log in PATH... for a reviewer elsewhere.

    The bundle holds the log files as they are, each stream's checkpoints file, the
    public key, the published schema set, the report (report.html and report.json)
    and SHA256SUMS; `kerno-otel audit verify FILE.tar.gz` checks it anywhere,
    offline. Exits 0 when the log is intact, 1 when the bundle was written but the
    log is damaged (see its report), 2 on usage errors.
    """
    from kerno_otel.audit.keys import KeyFileError
    from kerno_otel.cli.schema import published_schemas
    from kerno_otel.review.bundle import BundleError
    from kerno_otel.review.evidence import make
    from kerno_otel.review.reading import ReadError
    from kerno_otel.verify.order import VerifyError

    if not output.name.endswith((".tar.gz", ".tgz")):
        raise UserError(f"-o {output}: a bundle's name ends in .tar.gz")
    try:
        data = make(paths, Path(key_path), output, published_schemas())
    except KeyFileError as e:
        raise UserError(f"--key: {e}") from None
    except (VerifyError, ReadError, BundleError) as e:
        raise UserError(str(e)) from None
    except OSError as e:
        raise UserError(f"{e.filename or output}: {e.strerror}") from None
    click.echo(f"wrote {output}: {data['records']:,} records; {data['verdict']['text']}", err=True)
    sys.exit(0 if data["verdict"]["intact"] else 1)


def verify_bundle(path: Path, key_path: str | None, as_json: bool) -> None:
    """``audit verify FILE.tar.gz``: the bundle's files, logs and report, as they are."""
    from kerno_otel.review.evidence import check

    checked = check(path, key_path)
    problems = [
        f"{p.file}:{p.line}: seq {'?' if p.seq is None else p.seq}: {p.kind}: {p.explanation}"
        for r in checked.reports
        for p in r.problems
    ]
    if as_json:
        click.echo(
            json.dumps(
                {
                    "intact": checked.intact,
                    "bundle": str(path),
                    "files": checked.files,
                    "key_id": checked.key_id,
                    "bundle_problems": checked.problems,
                    "streams": [r.to_json() for r in checked.reports],
                },
                ensure_ascii=False,
            )
        )
    else:
        for line in [*checked.problems, *problems]:
            click.echo(line)
    if checked.key_id is not None:
        click.echo(
            f"key id {checked.key_id} (from {'--key' if key_path else 'the bundle'}: "
            "compare it with the key id you were given)",
            err=True,
        )
    records = sum(r.records for r in checked.reports)
    count = len(checked.problems) + len(problems)
    verdict = "intact" if checked.intact else f"{count:,} problem{'s' if count != 1 else ''}"
    click.echo(
        f"bundle {path}: {checked.files} files, {records:,} records in "
        f"{len(checked.reports)} stream(s): {verdict}",
        err=True,
    )
    sys.exit(0 if checked.intact else 1)
