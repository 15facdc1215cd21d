"""The ``kerno-otel`` command line: a thin click layer that parses, calls the library and renders.

Data goes to stdout, diagnostics and progress to stderr. Exit codes: 0 success,
1 the thing checked is bad, 2 a usage or configuration error. User errors are one
``Error: ...`` line; ``KERNO_OTEL_DEBUG=1`` shows the traceback of unexpected ones.
"""

from __future__ import annotations

import contextlib
import gzip
import io
import json
import os
import stat
import sys
import zlib
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import IO, Any

import click
import orjson

from kerno_otel import __version__
from kerno_otel.records.schema import RECORD, SchemaSet, schema_file
from kerno_otel.records.validate import RecordValidator, reference_check, reference_validator
from kerno_otel.verify.reading import STDIN_NAME, check_readable, open_log

_STDIN_NAME = STDIN_NAME
_PROGRESS_EVERY = 4096  # lines between progress refreshes: keeps rich off the hot loop

Check = Callable[[Mapping[str, Any]], str | None]


def _schemas() -> SchemaSet:
    """The published schema set: built-ins plus the event types of the plugins that load."""
    from kerno_otel.config.load import ConfigError
    from kerno_otel.daemon.plugins import PluginLoadError, load_with_schemas

    try:
        return load_with_schemas(None, os.environ, sys.stderr)[1]
    except (ConfigError, PluginLoadError) as e:
        raise UserError(str(e)) from None


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


@main.group()
def audit() -> None:
    """Check and inspect audit logs."""


@main.group()
def schema() -> None:
    """The published audit record schemas (JSON Schema 2020-12)."""


# --- audit validate --------------------------------------------------------------------------


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
    schemas = _schemas()
    check: Check
    if reference:
        validator = reference_validator(schemas)
        check = lambda record: reference_check(validator, record)  # noqa: E731
    else:
        check = RecordValidator(schemas).check

    lines = invalid = 0
    show_progress = not silent and sys.stderr.isatty()
    with _Progress(show_progress) as progress:
        for name in files:
            display = _STDIN_NAME if name == "-" else name
            with _open_log(name) as (stream, raw):
                progress.start(display, raw)
                for lineno, reason in _line_results(stream, check):
                    lines += 1
                    if reason is not None:
                        invalid += 1
                        click.echo(f"{display}:{lineno}: {reason}")
                    if lines % _PROGRESS_EVERY == 0:
                        progress.update()
                progress.update()
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


def _line_results(stream: IO[bytes], check: Check) -> Iterator[tuple[int, str | None]]:
    """(line number, None or the reason it is bad) for every line of ``stream``."""
    lineno = 0
    try:
        for lineno, line in enumerate(stream, 1):
            if line.endswith(b"\n"):
                yield lineno, _line_reason(line[:-1], check)
            elif _line_reason(line, check) is None:
                yield lineno, "missing final newline"
            else:
                # What a crash mid-write leaves; the writer sets it aside on start.
                yield lineno, "torn last line (no final newline)"
    except EOFError:
        yield lineno + 1, "gzip data truncated"
    except (gzip.BadGzipFile, zlib.error):
        yield lineno + 1, "not valid gzip data"


_JSON_TYPES = {dict: "object", list: "array", str: "string", int: "number", float: "number"}


def _line_reason(line: bytes, check: Check) -> str | None:
    """Why one line (without its newline) is not a valid record; None when it is."""
    if not line.strip():
        return "empty line"
    try:
        record = orjson.loads(line)
    except orjson.JSONDecodeError as e:
        try:
            line.decode("utf-8")
        except UnicodeDecodeError as u:
            return f"not valid UTF-8 (byte {u.start + 1})"
        # The position only: the parser's message may quote the line.
        return f"not valid JSON (column {e.colno})"
    if not isinstance(record, dict):
        kind = "null" if record is None else "boolean" if isinstance(record, bool) else None
        return f"not a JSON object ({kind or _JSON_TYPES.get(type(record), 'value')})"
    return check(record)


class _Progress:
    """A rich progress bar on stderr, or nothing at all."""

    def __init__(self, enabled: bool) -> None:
        self._bar: Any = None
        self._task: Any = None
        self._raw: IO[bytes] | None = None
        if enabled:
            from rich.console import Console
            from rich.progress import Progress

            self._bar = Progress(console=Console(stderr=True), transient=True)

    def __enter__(self) -> _Progress:
        if self._bar is not None:
            self._bar.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.stop()

    def start(self, name: str, raw: IO[bytes]) -> None:
        """A new bar for one input: by bytes when its size is known, else by lines."""
        if self._bar is None:
            return
        if self._task is not None:
            self._bar.stop_task(self._task)
        try:
            info = os.fstat(raw.fileno())
            total = info.st_size if stat.S_ISREG(info.st_mode) and info.st_size else None
        except (OSError, ValueError, io.UnsupportedOperation):
            total = None
        self._raw = raw if total else None
        self._task = self._bar.add_task(name, total=total)

    def track(self, name: str, total: int) -> None:
        """A bar for work measured in units known up front (verify: bytes of all files)."""
        if self._bar is not None:
            self._task = self._bar.add_task(name, total=total)

    def advance_to(self, done: int) -> None:
        if self._bar is not None:
            self._bar.update(self._task, completed=done)

    def update(self) -> None:
        if self._bar is None:
            return
        if self._raw is not None:
            self._bar.update(self._task, completed=self._raw.tell())
        else:
            self._bar.update(self._task, advance=_PROGRESS_EVERY)


# --- audit verify ------------------------------------------------------------------------------


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
    show_progress = not silent and sys.stderr.isatty()
    with _Progress(show_progress) as progress:

        def advance(done: int, total: int) -> None:
            if done == 0:
                progress.track("verify", total)
            else:
                progress.advance_to(done)

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


# --- keys --------------------------------------------------------------------------------------


@main.group()
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


# --- schema ------------------------------------------------------------------------------------


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
        written = _schemas().export(directory)
    except OSError as e:
        raise UserError(f"{e.filename or directory}: {e.strerror}") from None
    for path in written:
        click.echo(str(path))


@schema.command()
@click.argument("type_name", metavar="[TYPE]", required=False, help="An event type, e.g. ai.call.")
def show(type_name: str | None) -> None:
    """Print the record schema, or the details schema of event type TYPE, as JSON."""
    schemas = _schemas()
    if type_name is None:
        name = RECORD
    elif type_name in schemas.types():
        name = schema_file(type_name)
    else:
        known = ", ".join(schemas.types())
        raise UserError(f"unknown event type {type_name!r} (known: {known})")
    click.echo(json.dumps(schemas.documents()[name], indent=2, ensure_ascii=False))


# --- run ---------------------------------------------------------------------------------------


@main.command()
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
    from kerno_otel.config.load import ConfigError, load_config, parse_duration
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


# --- plugins -----------------------------------------------------------------------------------


@main.command("plugins")
@click.option("--config", "config_path", metavar="FILE", help="Config file (as for run).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def plugins_command(config_path: str | None, as_json: bool) -> None:
    """List the plugins that load: name, distribution, version, hooks and event types.

    Plugins that fail to load are reported on stderr (one line each) and in the
    JSON output under "failures".
    """
    from dataclasses import asdict

    from kerno_otel.config.load import ConfigError
    from kerno_otel.daemon.plugins import PluginLoadError, load_with_schemas

    try:
        host, _ = load_with_schemas(config_path, os.environ, sys.stderr)
    except (ConfigError, PluginLoadError) as e:
        raise UserError(str(e)) from None
    if as_json:
        failures = [{k: v for k, v in asdict(f).items() if k != "message"} for f in host.failures]
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


# --- doctor ------------------------------------------------------------------------------------


@main.command("doctor")
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
    from kerno_otel.config.load import ConfigError
    from kerno_otel.daemon.plugins import PluginLoadError
    from kerno_otel.doctor.engine import diagnose

    try:
        result, path = diagnose(
            config_path,
            duration=duration,
            env=os.environ,
            stderr=sys.stderr,
            analyzer=_doctor_analyzer(ai),
        )
    except (AuditFileError, ConfigError, PluginLoadError) as e:
        raise UserError(str(e)) from None
    for note in result.notes:
        click.echo(f"kerno-otel: doctor: {note}", err=True)
    if output == "json":
        click.echo(json.dumps(_doctor_json(result), ensure_ascii=False, default=str))
    else:
        _doctor_pretty(result)
    sent = len(result.deliveries)
    failed = sum(1 for d in result.deliveries if not d.delivered)
    click.echo(
        f"{result.cycle_id}: {len(result.findings)} findings, {sent} sent"
        + (f" ({failed} not delivered)" if failed else "")
        + f"; audit log {path}",
        err=True,
    )
    sys.exit(1 if exit_code and result.alerting else 0)


def _doctor_analyzer(ai: bool | None) -> Callable[[Any, Any], Any]:
    """The analyzer plugin's ``build(audit_log, config)``, when it is installed and wanted."""

    def make(log: Any, config: Any) -> Any:
        from kerno_otel.daemon.plugins import allowed

        wanted = ai if ai is not None else bool(config.section("ai").get("enabled"))
        if not wanted or not allowed("analyzer", config.section("plugins"), os.environ):
            return None
        if ai and not config.section("ai").get("enabled"):
            # --ai asks for the analyzer for this run, whatever ai.enabled says.
            import dataclasses

            sections = {**config.sections, "ai": {**config.section("ai"), "enabled": True}}
            config = dataclasses.replace(config, sections=sections)
        try:
            # The core never imports a plugin at import time; this one is optional.
            import importlib

            build = importlib.import_module("kerno_otel_plugins.analyzer").build
        except (ImportError, AttributeError):
            return None
        return build(log, config)

    return make


def _doctor_json(result: Any) -> dict[str, Any]:
    analysis = result.analysis
    return {
        "cycle_id": result.cycle_id,
        "window_s": round(result.window_s, 3),
        "findings": [
            {"rule": f.rule, "severity": f.severity, "title": f.title, "evidence": f.evidence}
            for f in result.redacted
        ],
        "deliveries": [
            {
                "rule": d.rule,
                "severity": d.severity,
                "sink": d.sink,
                "payload_hash": d.payload_hash,
                "delivered": d.delivered,
                **({"error": d.error} if d.error else {}),
            }
            for d in result.deliveries
        ],
        "absent": result.not_measured,
        "analysis": None
        if analysis is None
        else {
            "text": analysis.text,
            "provider": analysis.provider,
            "model": analysis.model,
            "cache": analysis.cache,
            "fallback": analysis.fallback,
        },
    }


def _doctor_pretty(result: Any) -> None:
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
