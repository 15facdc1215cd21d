"""``kerno-otel schema export|show``, and help text for every command (kerno_otel/cli/)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click
from click.testing import CliRunner

from kerno_otel import __version__
from kerno_otel.cli import main
from kerno_otel.records.catalogue import BUILTIN_TYPES

SCHEMA_DIR = Path(__file__).resolve().parent.parent / "schemas" / "kerno-audit" / "v1"


def run(*args: str) -> Any:
    return CliRunner().invoke(main, list(args))


def test_export_writes_and_lists_the_published_files(tmp_path: Path) -> None:
    out = tmp_path / "schemas"
    result = run("schema", "export", str(out))
    names = ["common.schema.json", "record.schema.json"]
    names += [f"{t}.schema.json" for t in BUILTIN_TYPES]
    names += ["bundle.schema.json"]
    assert (result.exit_code, result.stdout, result.stderr) == (
        0,
        "".join(f"{out / name}\n" for name in names),
        "",
    )
    for name in names:
        assert (out / name).read_bytes() == (SCHEMA_DIR / name).read_bytes()


def test_export_onto_a_file_is_a_usage_error(tmp_path: Path) -> None:
    target = tmp_path / "taken"
    target.write_text("")
    result = run("schema", "export", str(target))
    assert (result.exit_code, result.stdout, result.stderr) == (
        2,
        "",
        f"Error: {target}: File exists\n",
    )


def test_show_prints_the_record_schema() -> None:
    result = run("schema", "show")
    assert (result.exit_code, result.stderr) == (0, "")
    assert result.stdout == (SCHEMA_DIR / "record.schema.json").read_text(encoding="utf-8")


def test_show_type_prints_its_details_schema() -> None:
    result = run("schema", "show", "ai.call")
    assert (result.exit_code, result.stderr) == (0, "")
    assert json.loads(result.stdout) == json.loads((SCHEMA_DIR / "ai.call.schema.json").read_text())


def test_show_unknown_type() -> None:
    result = run("schema", "show", "x.y")
    known = ", ".join(BUILTIN_TYPES)
    assert (result.exit_code, result.stdout, result.stderr) == (
        2,
        "",
        f"Error: unknown event type 'x.y' (known: {known})\n",
    )


def test_version() -> None:
    result = run("--version")
    assert (result.exit_code, result.stdout) == (0, f"kerno-otel, version {__version__}\n")


def _commands(
    command: click.Command, path: tuple[str, ...] = ()
) -> Iterator[tuple[str, click.Command]]:
    yield " ".join(path) or "kerno-otel", command
    if isinstance(command, click.Group):
        for name, sub in command.commands.items():
            yield from _commands(sub, (*path, name))


def test_every_command_option_and_argument_has_help() -> None:
    missing = []
    for name, command in _commands(main):
        if not (command.help or "").strip():
            missing.append(name)
        for param in command.params:
            if not (getattr(param, "help", None) or "").strip():
                missing.append(f"{name} {param.name}")
    assert missing == []
    assert {"audit validate", "schema export", "schema show"} <= {n for n, _ in _commands(main)}
