"""Which files make up which stream, in chain order: shared by ``audit verify``, ``query``,
``report`` and ``bundle``.

Each rotated-to file opens with an ``audit.rotate`` naming its predecessor, so files
link into chains whatever their names. Chains that are not linked are grouped by the
stream they declare (``details.stream`` of an ``audit.rotate`` or resumed
``audit.start``, or the hash of a seq-0 line): one directory can hold two streams
(two live files side by side), and each is checked on its own (issue 13, item 8).
"""

from __future__ import annotations

import hashlib
import re
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import orjson

from kerno_otel.verify.reading import first_line


class VerifyError(ValueError):
    """A usage problem (a path that does not exist, nothing to verify); the message says which."""


@dataclass
class LogFile:
    """One log file and what its first line says about its place in a stream."""

    path: Path
    display: str
    first: dict[str, Any] | None  # the parsed first line
    size: int
    first_hash: str | None = None  # "sha256:..." of the first line, when it is whole

    @property
    def key(self) -> str:
        return self.path.name.removesuffix(".gz")

    @property
    def place(self) -> tuple[Path, str]:
        """Directory and :attr:`key`: two directories may hold files of the same name."""
        return self.path.parent, self.key

    @property
    def pred_place(self) -> tuple[Path, str] | None:
        """Where the predecessor would be: beside this file (:attr:`predecessor`)."""
        pred = self.predecessor
        return None if pred is None else (self.path.parent, pred)

    @property
    def predecessor(self) -> str | None:
        """``old_file`` of the ``audit.rotate`` this file opens with, else None."""
        first = self.first
        if first is None or first.get("type") != "audit.rotate":
            return None
        details = first.get("details")
        old = details.get("old_file") if isinstance(details, dict) else None
        return old.removesuffix(".gz") if isinstance(old, str) else None

    @property
    def first_seq(self) -> int:
        seq = self.first.get("seq") if self.first is not None else None
        return seq if isinstance(seq, int) else -1

    @property
    def declared_stream(self) -> str | None:
        """The stream this file says it belongs to, when its first line says."""
        first = self.first or {}
        details = first.get("details")
        if first.get("type") in ("audit.rotate", "audit.start") and isinstance(details, dict):
            stream = details.get("stream")
            if isinstance(stream, str):
                return stream
        if self.first_seq == 0:
            return self.first_hash
        return None


@dataclass
class Stream:
    """The files of one stream, in chain order."""

    files: list[LogFile] = field(default_factory=list)
    id: str | None = None


_NUMBERED: Final = re.compile(r"\.jsonl\.[0-9]+(\.gz)?$")


def is_log_name(name: str) -> bool:
    """``*.jsonl`` and ``*.jsonl.gz``, and the names logrotate gives a live file it
    renamed (``kerno-audit.jsonl.1``, ``kerno-audit.jsonl.2.gz``)."""
    return name.endswith((".jsonl", ".jsonl.gz")) or _NUMBERED.search(name) is not None


def collect(paths: Sequence[str | Path]) -> tuple[list[Path], bool]:
    """The files named, a directory standing for the log files in it; and whether any
    directory was given (then a file missing from the chain is damage, not an omission)."""
    files: list[Path] = []
    directory_mode = False
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            directory_mode = True
            for child in sorted(path.iterdir()):
                name = child.name
                # Log files only: not the checkpoints file, torn tails set aside,
                # half-written .gz.tmp files or anything else kept beside them.
                # A link is never followed from a directory: the writer makes none, and
                # what it points to is not the log (nor for a bundle to carry away).
                if child.is_symlink() or not child.is_file() or not is_log_name(name):
                    continue
                files.append(child)
        elif path.exists():
            files.append(path)
        else:
            raise VerifyError(f"{raw}: No such file or directory")
    unique: dict[Path, Path] = {}
    for path in files:
        unique.setdefault(path.resolve(), path)
    if not unique:
        raise VerifyError("no audit log files to verify")
    return list(unique.values()), directory_mode


def describe(path: Path) -> LogFile:
    try:
        line = first_line(str(path))
    except (OSError, EOFError, zlib.error):
        line = b""
    try:
        first = orjson.loads(line) if line.endswith(b"\n") else None
    except orjson.JSONDecodeError:
        first = None
    digest = "sha256:" + hashlib.sha256(line[:-1]).hexdigest() if line.endswith(b"\n") else None
    return LogFile(
        path,
        str(path),
        first if isinstance(first, dict) else None,
        path.stat().st_size,
        digest,
    )


def with_named_predecessors(described: list[LogFile]) -> list[LogFile]:
    """Add the files that ``audit.rotate`` records name as predecessors and that are beside
    them under a name a directory listing passes over (``kerno-audit.jsonl.1``: the writer
    found its live file renamed by someone else, and linked to it)."""
    places = {f.place for f in described}
    todo = list(described)
    while todo:
        f = todo.pop()
        pred = f.predecessor
        if pred is None or f.pred_place in places:
            continue
        for path in (f.path.parent / pred, f.path.parent / (pred + ".gz")):
            if path.is_file() and not path.is_symlink():
                added = describe(path)
                described.append(added)
                todo.append(added)
                places.add(added.place)
                break
    return described


def _chains(files: list[LogFile]) -> list[list[LogFile]]:
    """Follow ``audit.rotate`` links from each file with no predecessor present; files
    caught in a loop of links come last, one chain each."""
    by_place = {f.place: f for f in files}
    successors: dict[tuple[Path, str], list[LogFile]] = {}
    heads: list[LogFile] = []
    for f in files:
        pred = f.pred_place
        if pred is not None and pred in by_place and pred != f.place:
            successors.setdefault(pred, []).append(f)
        else:
            heads.append(f)
    chains: list[list[LogFile]] = []
    seen: set[tuple[Path, str]] = set()
    # Heads in seq order; a file whose first line is no record (a stray file, or one
    # damaged at its head) last, so that it does not take the place of seq 0.
    for head in sorted(heads, key=lambda f: (f.first_seq < 0, f.first_seq)):
        chain: list[LogFile] = []
        current: LogFile | None = head
        while current is not None and current.place not in seen:
            seen.add(current.place)
            chain.append(current)
            nexts = sorted(successors.get(current.place, []), key=lambda f: f.first_seq)
            nexts = [n for n in nexts if n.place not in seen]
            current = nexts[0] if nexts else None
        chains.append(chain)
    for f in sorted((f for f in files if f.place not in seen), key=lambda f: f.first_seq):
        chains.append([f])
    return chains


def chain_order(files: list[LogFile]) -> list[LogFile]:
    """All files, chains one after the other (the order of a single stream)."""
    return [f for chain in _chains(files) for f in chain]


def streams(files: list[LogFile]) -> list[Stream]:
    """The streams among ``files``: linked chains, grouped by the stream they declare.

    Chains keep their relative order (that of :func:`chain_order`) within a stream. A
    chain that declares no stream joins the first stream (a log from before stream
    ids, or one whose first lines are damaged: verify then says how).
    """
    chains = _chains(files)
    ids: list[str | None] = []
    for chain in chains:
        declared = [f.declared_stream for f in chain if f.declared_stream is not None]
        ids.append(declared[0] if declared else None)
    known: list[str | None] = list(dict.fromkeys(i for i in ids if i is not None)) or [None]
    groups = [Stream([], stream_id) for stream_id in known]
    for chain, stream_id in zip(chains, ids, strict=True):
        group = groups[known.index(stream_id)] if stream_id is not None else groups[0]
        group.files.extend(chain)
    return groups


def stream_files(paths: Sequence[str | Path]) -> tuple[list[Stream], bool]:
    """The streams held by ``paths`` (files and/or directories), each in chain order;
    and whether a directory was given. Raises :class:`VerifyError`."""
    found, directory_mode = collect(paths)
    described = [describe(p) for p in found]
    if directory_mode:
        described = with_named_predecessors(described)
    return streams(described), directory_mode
