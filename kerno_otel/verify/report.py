"""What ``audit verify`` reports: the kinds of damage, one :class:`Problem`, the :class:`Report`.

Shared by the chain walk (``_verify_walk.py``), which fills a report, and the entry
point (``_verify.py``), which returns it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Final

KINDS: Final = (
    "modified",
    "inserted",
    "deleted",
    "reordered",
    "truncated",
    "file-missing",
    "bad-signature",
    "unknown-key",
    "torn-line",
)


@dataclass(frozen=True)
class Problem:
    """One piece of damage: where (file, 1-based line, seq when known), what kind, and why."""

    file: str
    line: int
    seq: int | None
    kind: str
    explanation: str

    def to_json(self) -> dict[str, Any]:
        return {
            "file": self.file,
            "line": self.line,
            "seq": self.seq,
            "kind": self.kind,
            "explanation": self.explanation,
        }


@dataclass
class Report:
    """What ``verify`` found. ``intact`` only when there is no problem at all."""

    files: list[str] = field(default_factory=list)
    records: int = 0
    first_seq: int | None = None
    last_seq: int | None = None
    stream: str | None = None
    checkpoints_file: str | None = None
    checkpoints_checked: int = 0
    problems: list[Problem] = field(default_factory=list)
    not_checked: list[str] = field(default_factory=list)

    @property
    def intact(self) -> bool:
        return not self.problems

    def to_json(self) -> dict[str, Any]:
        return {
            "intact": self.intact,
            "files": self.files,
            "records": self.records,
            "first_seq": self.first_seq,
            "last_seq": self.last_seq,
            "stream": self.stream,
            "checkpoints_file": self.checkpoints_file,
            "checkpoints_checked": self.checkpoints_checked,
            "problems": [p.to_json() for p in self.problems],
            "not_checked": self.not_checked,
        }


@dataclass
class _Where:
    file: str
    line: int
    seq: int | None
