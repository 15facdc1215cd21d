"""``audit verify``: is a stream whole? Chain, seq, checkpoint signatures and truncation, offline.

The files of a stream are put in chain order (each rotated-to file opens with an
``audit.rotate`` naming its predecessor), then checked in one pass: the lines by the
chain walk (``_verify_walk.py``), the checkpoints (signatures, and that the log
reaches the last one) here. The report's types live in ``_verify_report.py``.
"""

from __future__ import annotations

import gc
import gzip
import hashlib
import zlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from kerno_otel.audit.checkpoints import SUFFIX, read_sidecar, signature_ok
from kerno_otel.verify.reading import first_line, read_all
from kerno_otel.verify.report import KINDS, Problem, Report, _Where
from kerno_otel.verify.walk import _Walker

# Problem, Report and KINDS are re-exported: this module is where callers find them.
__all__ = ["KINDS", "Problem", "Report", "VerifyError", "verify"]


class VerifyError(ValueError):
    """A usage problem (a path that does not exist, nothing to verify); the message says which."""


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


def _with_named_predecessors(described: list[_File]) -> list[_File]:
    """Add the files that ``audit.rotate`` records name as predecessors and that are beside
    them under a name a directory listing passes over (``kerno-audit.jsonl.1``: the writer
    found its live file renamed by someone else, and linked to it)."""
    keys = {f.key for f in described}
    todo = list(described)
    while todo:
        f = todo.pop()
        pred = f.predecessor
        if pred is None or pred in keys:
            continue
        for path in (f.path.parent / pred, f.path.parent / (pred + ".gz")):
            if path.is_file() and not path.is_symlink():
                added = _describe(path)
                described.append(added)
                todo.append(added)
                keys.add(added.key)
                break
    return described


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
    described = [_describe(p) for p in found]
    if directory_mode:
        described = _with_named_predecessors(described)
    ordered = _chain_order(described)
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
            # A file naming itself: the writer found the live file removed and opened a new
            # one under the same name; the one it names is gone whatever is there now.
            gone = pred == f.key or not any(
                (f.path.parent / name).exists() for name in (pred, pred + ".gz")
            )
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
