"""``audit verify``: is a stream whole? Chain, seq, checkpoint signatures and truncation, offline.

The files of a stream are put in chain order (each rotated-to file opens with an
``audit.rotate`` naming its predecessor), then checked in one pass. The common
case, an intact file, is checked with whole-list operations (one hash and two
slices per line, compared list against list); only a file where that fails is
walked line by line to say which line is bad and how.

How damage is told apart, from the evidence a line leaves (``E`` the seq
expected, ``P`` the hash of the line before):

- seq fits, prev is not ``P``: when the next line's prev is this line's hash, the
  line before was changed (``modified`` there); else this line was (its prev).
- seq jumps, prev is not ``P``: lines are gone (``deleted``), unless the next line
  carries the missing seq and links back to ``P`` (two lines swapped: ``reordered``),
  or an ``audit.loss`` (reason ``write_error``) names exactly that range.
- seq jumps or repeats but prev is ``P``: the seq itself was edited (``modified``).
- seq repeats and prev skips the line before (it is the hash of the line two back):
  the line before was slipped in (``inserted``); a line that links to ``P`` but
  that the next line skips over was slipped in too.
- seq goes back otherwise: ``reordered``.
"""

from __future__ import annotations

import gc
import gzip
import hashlib
import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import orjson
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from kerno_otel._checkpoints import SUFFIX, read_sidecar, signature_ok
from kerno_otel._keys import key_id
from kerno_otel._reading import first_line, read_all

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

_HEAD: Final = b'{"v":"1","seq":'
_PREV_KEY: Final = b'"prev":"sha256:'
_AUDIT_TYPE: Final = b'"type":"audit.'
_GENESIS_HEX: Final = b"0" * 64


class VerifyError(ValueError):
    """A usage problem (a path that does not exist, nothing to verify); the message says which."""


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
class _File:
    path: Path
    display: str
    first: dict[str, Any] | None  # the parsed first line
    size: int

    @property
    def key(self) -> str:
        return self.path.name.removesuffix(".gz")

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


@dataclass
class _Where:
    file: str
    line: int
    seq: int | None


def _collect(paths: Sequence[str | Path]) -> tuple[list[Path], bool]:
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
                if not child.is_file() or not name.endswith((".jsonl", ".jsonl.gz")):
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


def _describe(path: Path) -> _File:
    try:
        line = first_line(str(path))
    except (OSError, EOFError, zlib.error):
        line = b""
    try:
        first = orjson.loads(line) if line.endswith(b"\n") else None
    except orjson.JSONDecodeError:
        first = None
    return _File(path, str(path), first if isinstance(first, dict) else None, path.stat().st_size)


def _chain_order(files: list[_File]) -> list[_File]:
    """Follow ``audit.rotate`` links from each file with no predecessor present."""
    by_key = {f.key: f for f in files}
    successors: dict[str, list[_File]] = {}
    heads: list[_File] = []
    for f in files:
        pred = f.predecessor
        if pred is not None and pred in by_key and pred != f.key:
            successors.setdefault(pred, []).append(f)
        else:
            heads.append(f)
    ordered: list[_File] = []
    seen: set[str] = set()
    for head in sorted(heads, key=lambda f: f.first_seq):
        current: _File | None = head
        while current is not None and current.key not in seen:
            seen.add(current.key)
            ordered.append(current)
            nexts = sorted(successors.get(current.key, []), key=lambda f: f.first_seq)
            nexts = [n for n in nexts if n.key not in seen]
            current = nexts[0] if nexts else None
    ordered.extend(sorted((f for f in files if f.key not in seen), key=lambda f: f.first_seq))
    return ordered


def _parse(line: bytes) -> tuple[int | None, bytes | None]:
    """(seq, prev hex) read from a line's fixed layout, falling back to JSON."""
    if line.startswith(_HEAD) and line[-81:-66] == _PREV_KEY and line.endswith(b'"}'):
        comma = line.find(b",", 15)
        try:
            return int(line[15:comma]), line[-66:-2]
        except ValueError:
            pass
    try:
        record = orjson.loads(line)
    except orjson.JSONDecodeError:
        return None, None
    if not isinstance(record, dict):
        return None, None
    seq, prev = record.get("seq"), record.get("prev")
    prev_hex = prev[7:].encode() if isinstance(prev, str) and prev.startswith("sha256:") else None
    return (seq if isinstance(seq, int) and not isinstance(seq, bool) else None), prev_hex


def _lines_with(data: bytes, needle: bytes) -> Iterator[int]:
    """0-based indexes of the lines of ``data`` holding ``needle`` (a rare one)."""
    line = 0
    counted = 0
    at = data.find(needle)
    while at >= 0:
        line += data.count(b"\n", counted, at)
        counted = at
        yield line
        nxt = data.find(b"\n", at)
        if nxt < 0:
            return
        at = data.find(needle, nxt)
    return


class _Walker:
    """Checks lines in stream order, keeping what the next line must link to."""

    def __init__(self, report: Report, key: Ed25519PublicKey | None) -> None:
        self.report = report
        self.key = key
        self.key_id = key_id(key) if key is not None else None
        self.expect_seq = 0
        self.prev: bytes = _GENESIS_HEX
        self.prev2: bytes | None = None  # hash of the line before the previous one
        self.last: _Where | None = None
        self.skip_link = False
        self.gaps: list[tuple[int, int, Problem]] = []
        self.moved: set[int] = set()  # seqs found later, out of place
        self.losses: list[tuple[int, int]] = []
        self.log_checkpoints: list[tuple[_Where, dict[str, Any]]] = []
        self.hash_at: dict[int, tuple[bytes, _Where]] = {}
        self.wanted: set[int] = set()

    def problem(self, where: _Where, kind: str, explanation: str) -> None:
        self.report.problems.append(Problem(where.file, where.line, where.seq, kind, explanation))

    def resync(self, seq: int, prev_hex: bytes) -> None:
        """Continue from a known point (an ``audit.rotate``'s claim about a missing file)."""
        self.expect_seq, self.prev, self.prev2, self.skip_link = seq, prev_hex, None, False

    def run_file(self, name: str, data: bytes) -> None:
        torn = bool(data) and not data.endswith(b"\n")
        lines = data.split(b"\n")
        if not torn:
            lines.pop()  # after the final newline
        n = len(lines)
        if n == 0:
            return
        sha = hashlib.sha256
        hashes = [sha(line).hexdigest().encode() for line in lines]
        # The fast path: every line in the writer's layout, linked, and numbered in a row.
        fast = not torn and not self.skip_link
        first = self.expect_seq
        if fast:
            # Each line must start with exactly its expected seq and end with the
            # previous line's hash; map() over C methods keeps Python frames out of it.
            heads = [b'{"v":"1","seq":%d,' % s for s in range(first, first + n)]
            prevs = [line[-66:-2] for line in lines]
            fast = (
                prevs[0] == self.prev
                and prevs[1:] == hashes[:-1]
                and all(map(bytes.startswith, lines, heads))
            )
        if fast:
            for s in self.wanted:
                if first <= s < first + n:
                    self.hash_at[s] = (hashes[s - first], _Where(name, s - first + 1, s))
            for i in _lines_with(data, _AUDIT_TYPE):
                self._audit_line(_Where(name, i + 1, first + i), lines[i], i, hashes)
            self.prev2 = hashes[-2] if n >= 2 else self.prev
            self.prev = hashes[-1]
            self.expect_seq = first + n
            self.last = _Where(name, n, first + n - 1)
            self.report.records += n
            return
        parsed = [_parse(line) for line in lines]
        self._walk(name, lines, hashes, parsed, torn)

    def _accept(self, where: _Where, h: bytes, seq: int) -> None:
        self.prev2, self.prev = self.prev, h
        self.expect_seq = seq + 1
        self.last = where

    def _seq_edited(self, where: _Where, h: bytes, s: int, expect: int) -> None:
        """A line linked to the one before but numbered wrong: its seq was edited."""
        self.problem(
            where,
            "modified",
            f"seq {s}, expected {expect}, yet it links to the line before: its seq was changed",
        )
        self._accept(where, h, expect)
        self.skip_link = True  # its hash changed with it, so the next prev cannot match

    def _walk(
        self,
        name: str,
        lines: list[bytes],
        hashes: list[bytes],
        parsed: list[tuple[int | None, bytes | None]],
        torn: bool,
    ) -> None:
        n = len(lines)
        i = 0
        while i < n:
            s, p = parsed[i]
            h = hashes[i]
            where = _Where(name, i + 1, s)
            self.report.records += 1
            if s is not None and s in self.wanted:
                self.hash_at[s] = (h, where)
            if s is None or p is None:
                if torn and i == n - 1:
                    self.problem(
                        where,
                        "torn-line",
                        "the last line has no newline: a write cut short (crash) or a cut",
                    )
                else:
                    self.problem(where, "modified", "not an audit record (no JSON seq and prev)")
                self.prev2, self.prev = self.prev, h
                self.expect_seq += 1
                self.skip_link = True
                i += 1
                continue
            if torn and i == n - 1:
                self.problem(where, "torn-line", "the last line has no newline")
            linked = self.skip_link or p == self.prev
            self.skip_link = False
            expect = self.expect_seq
            nxt = parsed[i + 1] if i + 1 < n else None
            step = 1
            if s == expect and linked:
                self._accept(where, h, s)
            elif s == expect:
                if self.last is not None and (nxt is None or nxt[1] == h):
                    self.problem(
                        self.last,
                        "modified",
                        "its hash does not match the prev of the next line",
                    )
                    self._accept(where, h, s)
                else:
                    self.problem(where, "modified", "its prev matches neither neighbour")
                    self._accept(where, h, s)
                    self.skip_link = True
            elif s > expect:
                if nxt is not None and nxt[0] == expect and nxt[1] == self.prev:
                    self.problem(
                        where, "reordered", f"seq {s} comes before seq {expect} (lines swapped)"
                    )
                    self.report.records += 1
                    if expect in self.wanted:
                        self.hash_at[expect] = (hashes[i + 1], _Where(name, i + 2, expect))
                    self._accept(where, h, s)
                    step = 2
                elif linked:
                    self._seq_edited(where, h, s, expect)
                else:
                    missing = f"seq {expect}" if s == expect + 1 else f"seqs {expect}..{s - 1}"
                    gap = Problem(
                        name, i + 1, expect, "deleted", f"{missing} missing before this line"
                    )
                    self.gaps.append((expect, s - 1, gap))
                    self._accept(where, h, s)
            elif (
                not linked
                and self.last is not None
                and p == self.prev2
                and self.last.seq is not None
                and s == self.last.seq
            ):
                self.problem(
                    self.last,
                    "inserted",
                    f"seq {s} appears twice and the next line's prev skips over this one",
                )
                self._accept(where, h, s)
            elif linked and nxt is not None and nxt[1] == self.prev:
                self.problem(
                    where,
                    "inserted",
                    f"seq {s} (expected {expect}) and the next line's prev skips over it",
                )
                self.skip_link = False
            elif linked:
                self._seq_edited(where, h, s, expect)
            else:
                self.problem(where, "reordered", f"seq {s} after seq {expect - 1}")
                self.moved.add(s)
            if _AUDIT_TYPE in lines[i]:
                self._audit_line(where, lines[i], i, hashes)
            i += step

    def _audit_line(self, where: _Where, line: bytes, index: int, hashes: list[bytes]) -> None:
        """Collect what the writer's own records say: losses and checkpoints."""
        try:
            record = orjson.loads(line)
        except orjson.JSONDecodeError:
            return
        if not isinstance(record, dict):
            return
        kind, details = record.get("type"), record.get("details")
        if not isinstance(details, dict):
            return
        if kind == "audit.loss" and details.get("reason") == "write_error":
            first, last = details.get("first_seq"), details.get("last_seq")
            if isinstance(first, int) and isinstance(last, int):
                self.losses.append((first, last))
        elif kind == "audit.checkpoint":
            self.log_checkpoints.append((where, details))
            covered = details.get("seq")
            before = hashes[index - 1] if index > 0 else None
            if (
                isinstance(covered, int)
                and before is not None
                and where.seq is not None
                and (covered != where.seq - 1 or details.get("hash") != "sha256:" + before.decode())
            ):
                self.problem(where, "modified", "this checkpoint does not cover the line before it")
        elif kind in ("audit.start", "audit.rotate") and self.report.stream is None:
            stream = details.get("stream")
            if isinstance(stream, str):
                self.report.stream = stream

    def finish(self) -> None:
        """Report the gaps left: not those an ``audit.loss`` explains (a drop the writer
        owned up to), nor those whose lines all turned up later (moved, reported there)."""
        for first, last, gap in self.gaps:
            if any(lo <= first and last <= hi for lo, hi in self.losses):
                continue
            if all(s in self.moved for s in range(first, last + 1)):
                continue
            self.report.problems.append(gap)


def _check_signature(
    walker: _Walker, where: _Where, details: dict[str, Any], stream: str | None
) -> bool:
    """Report a checkpoint that is not ours or not valid; True when it can be trusted."""
    assert walker.key is not None
    if details.get("key_id") != walker.key_id:
        walker.problem(
            where,
            "unknown-key",
            f"signed by key {details.get('key_id')!r}, not by the key given ({walker.key_id})",
        )
        return False
    if not signature_ok(details, walker.key):
        walker.problem(where, "bad-signature", "the signature does not match its fields")
        return False
    if stream is not None and details.get("stream") != stream:
        walker.problem(where, "bad-signature", "signed for another stream")
        return False
    return True


def _default_checkpoints(ordered: list[_File]) -> Path:
    last = ordered[-1]
    candidate = last.path.with_name(last.key + SUFFIX)
    if candidate.exists():
        return candidate
    first = last.first or {}
    details = first.get("details")
    if isinstance(details, dict) and isinstance(details.get("new_file"), str):
        return last.path.with_name(details["new_file"] + SUFFIX)
    return candidate


def verify(
    paths: Sequence[str | Path],
    *,
    public_key: Ed25519PublicKey | None = None,
    checkpoints: str | Path | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> Report:
    """Verify the stream held by ``paths`` (files and/or directories).

    ``public_key`` enables the checkpoint checks (signatures and truncation);
    ``checkpoints`` is the checkpoints file (default: ``<live file>.checkpoints``
    beside the last file of the chain). ``progress(done_bytes, total_bytes)`` is
    called once with 0 before the first file, then after each file. Raises
    :class:`VerifyError` for a path that does not exist.
    """
    # Millions of short-lived bytes objects: the cyclic GC would only rescan them.
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        return _verify(paths, public_key, checkpoints, progress)
    finally:
        if was_enabled:
            gc.enable()


def _verify(
    paths: Sequence[str | Path],
    public_key: Ed25519PublicKey | None,
    checkpoints: str | Path | None,
    progress: Callable[[int, int], None] | None,
) -> Report:
    found, directory_mode = _collect(paths)
    ordered = _chain_order([_describe(p) for p in found])
    report = Report(files=[f.display for f in ordered])
    walker = _Walker(report, public_key)

    sidecar: list[tuple[_Where, dict[str, Any]]] = []
    if public_key is None:
        report.not_checked.append("truncation not checkable: no public key given (--key)")
        report.not_checked.append("checkpoint signatures not checked: no public key given (--key)")
    else:
        cp_path = Path(checkpoints) if checkpoints is not None else _default_checkpoints(ordered)
        if cp_path.exists():
            report.checkpoints_file = str(cp_path)
            for lineno, item in read_sidecar(cp_path):
                where = _Where(str(cp_path), lineno, None)
                if item is None:
                    walker.problem(where, "modified", "not a checkpoint (not a JSON object)")
                    continue
                seq = item.get("seq")
                where.seq = seq if isinstance(seq, int) else None
                sidecar.append((where, item))
                if isinstance(seq, int):
                    walker.wanted.add(seq)
        else:
            report.not_checked.append(
                f"truncation not checkable: no checkpoints file ({cp_path} not found; "
                "give --checkpoints)"
            )

    total = sum(f.size for f in ordered) or 1
    done = 0
    if progress is not None:
        progress(0, total)
    for f in ordered:
        pred = f.predecessor
        first: dict[str, Any] = f.first or {}
        raw_details = first.get("details")
        details: dict[str, Any] = raw_details if isinstance(raw_details, dict) else {}
        after = walker.last.file if walker.last is not None else None
        if pred is not None and (after is None or after != _display_of(ordered, pred)):
            # The file before this one is not here: say so, then go on from what the
            # rotate record claims about it.
            gone = not any((f.path.parent / name).exists() for name in (pred, pred + ".gz"))
            last_seq, last_hash = details.get("last_seq"), details.get("last_hash")
            if gone or directory_mode:
                span = f" (up to seq {last_seq})" if isinstance(last_seq, int) else ""
                walker.problem(
                    _Where(f.display, 1, f.first_seq),
                    "file-missing",
                    f"the rotated file before this one, {pred}{span}, is missing",
                )
            elif walker.last is None:
                report.not_checked.append(f"records before {f.display}: {pred} was not given")
            if isinstance(last_seq, int) and isinstance(last_hash, str):
                walker.resync(last_seq + 1, last_hash.removeprefix("sha256:").encode())
        try:
            data = read_all(str(f.path))
        except (OSError, EOFError, gzip.BadGzipFile, zlib.error) as exc:
            walker.problem(
                _Where(f.display, 1, None), "modified", f"cannot be read: {type(exc).__name__}"
            )
            continue
        if report.first_seq is None and f.first_seq >= 0:
            report.first_seq = f.first_seq
            if f.first_seq == 0 and data:
                report.stream = "sha256:" + hashlib.sha256(data[: data.find(b"\n")]).hexdigest()
        walker.run_file(f.display, data)
        done += f.size
        if progress is not None:
            progress(done, total)
    walker.finish()
    report.last_seq = walker.last.seq if walker.last is not None else None

    if public_key is not None:
        for where, details in walker.log_checkpoints:
            if _check_signature(walker, where, details, report.stream):
                report.checkpoints_checked += 1
        _check_sidecar(walker, sidecar, report)
    report.problems.sort(key=lambda p: (_file_rank(report, p.file), p.line))
    return report


def _display_of(ordered: Iterable[_File], key: str) -> str | None:
    for f in ordered:
        if f.key == key:
            return f.display
    return None


def _file_rank(report: Report, name: str) -> int:
    try:
        return report.files.index(name)
    except ValueError:
        return len(report.files)  # the checkpoints file: after the log


def _check_sidecar(
    walker: _Walker, sidecar: list[tuple[_Where, dict[str, Any]]], report: Report
) -> None:
    """Every trusted checkpoint must match the log, and the log must reach the last one."""
    reach: tuple[int, _Where, dict[str, Any]] | None = None
    for where, details in sidecar:
        if not _check_signature(walker, where, details, report.stream):
            continue
        report.checkpoints_checked += 1
        seq = details["seq"]
        at = walker.hash_at.get(seq)
        if at is not None and "sha256:" + at[0].decode() != details.get("hash"):
            walker.problem(
                at[1],
                "modified",
                f"its hash differs from the one signed in checkpoint {where.file}:{where.line}",
            )
        # The checkpoint record itself is the line after the one it covers.
        if reach is None or seq + 1 > reach[0]:
            reach = (seq + 1, where, details)
    last = walker.last
    if reach is not None and (report.last_seq is None or report.last_seq < reach[0]):
        end = last if last is not None else _Where(report.files[-1], 0, None)
        walker.problem(
            end,
            "truncated",
            f"the log ends at seq {report.last_seq}, but checkpoint {reach[1].file}:"
            f"{reach[1].line} (signed {reach[2].get('ts')}) shows it reached seq {reach[0]}",
        )
