"""Documentation that must not drift: every CLI command and option in docs/cli.md, every
event type in docs/audit-schema.md, and the control mapping there equal to the code's."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import click
import pytest

from kerno_otel.cli import main
from kerno_otel.records.catalogue import BUILTIN_TYPES
from kerno_otel.review.controls import CONTROLS, EVIDENCE

DOCS = Path(__file__).resolve().parent.parent / "docs"
CLI_MD = (DOCS / "cli.md").read_text()
SCHEMA_MD = (DOCS / "audit-schema.md").read_text()


def commands(group: click.Group, prefix: str) -> Iterator[tuple[str, click.Command]]:
    for name, command in sorted(group.commands.items()):
        path = f"{prefix} {name}"
        if isinstance(command, click.Group):
            yield from commands(command, path)
        else:
            yield path, command


COMMANDS = list(commands(main, "kerno-otel"))


def section(text: str, heading: str) -> str:
    start = text.index(heading)
    nxt = text.find("\n## ", start + len(heading))
    return text[start : nxt if nxt >= 0 else len(text)]


def test_the_walk_finds_the_reviewer_commands() -> None:
    names = [path for path, _ in COMMANDS]
    for expected in ("audit query", "audit report", "audit bundle", "audit verify"):
        assert f"kerno-otel {expected}" in names


@pytest.mark.parametrize(("path", "command"), COMMANDS, ids=[p for p, _ in COMMANDS])
def test_every_command_and_option_is_documented(path: str, command: click.Command) -> None:
    heading = f"## `{path}`"
    assert heading in CLI_MD, f"docs/cli.md has no section {heading}"
    text = section(CLI_MD, heading)
    assert command.help, f"{path} has no --help text"
    for param in command.params:
        if isinstance(param, click.Option):
            if "--help" in param.opts:
                continue
            assert param.help, f"{path} {param.opts[0]} has no help"
            for opt in [*param.opts, *param.secondary_opts]:
                assert f"`{opt}" in text or f"`-o`, `{opt}" in text, (
                    f"docs/cli.md, {heading}: {opt} is not documented"
                )


def test_every_event_type_is_documented_and_mapped_to_controls() -> None:
    for name in BUILTIN_TYPES:
        assert f"\n### {name}\n" in SCHEMA_MD, f"docs/audit-schema.md has no section ### {name}"
    assert set(EVIDENCE) == set(BUILTIN_TYPES), "every built-in type maps to its controls"
    table = section(SCHEMA_MD, "## Controls evidenced")
    rows = re.findall(r"^\| `([a-z.]+)` \|(.*)\|$", table, re.M)
    ids = [c.id for c in CONTROLS]
    documented = {
        t: (tuple(i for i, cell in zip(ids, cells.split("|")[:3], strict=True) if cell.strip()),
            cells.split("|")[3].strip())
        for t, cells in rows
    }  # fmt: skip
    assert documented == EVIDENCE


def test_control_names_appear_in_the_docs() -> None:
    for control in CONTROLS:
        assert control.id in SCHEMA_MD
        assert control.id in CLI_MD or control.id.split(":")[0] in CLI_MD
