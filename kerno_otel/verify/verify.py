"""``audit verify``: is a stream whole? Chain, seq, checkpoint signatures and truncation, offline.

The files are grouped into streams and put in chain order (``order.py``: each
rotated-to file opens with an ``audit.rotate`` naming its predecessor). Each file is
checked on its own, in a pool of worker processes when there is enough to do
(``walk.summarize``: a file is independent of the others except at its first
line), then joined in one pass: the lines by the chain walk (``walk.py``), the
checkpoints (signatures, and that the log reaches the last one) here. The report's
types live in ``report.py``.
"""

from __future__ import annotations

import gc
import gzip
import hashlib
import zlib
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from kerno_otel.audit.checkpoints import SUFFIX, read_sidecar, signature_ok
from kerno_otel.verify.order import LogFile, Stream, VerifyError, stream_files
from kerno_otel.verify.parallel import Summaries
from kerno_otel.verify.reading import read_all
from kerno_otel.verify.report import KINDS, Problem, Report, _Where
from kerno_otel.verify.walk import _Walker

# Problem, Report and KINDS are re-exported: this module is where callers find them.
__all__ = ["KINDS", "Problem", "Report", "VerifyError", "verify", "verify_streams"]


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


def _default_checkpoints(ordered: list[LogFile]) -> Path:
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
    workers: int | None = None,
) -> Report:
    """Verify the one stream held by ``paths`` (files and/or directories).

    ``public_key`` enables the checkpoint checks (signatures and truncation);
    ``checkpoints`` is the checkpoints file (default: ``<live file>.checkpoints``
    beside the last file of the chain). ``progress(done_bytes, total_bytes)`` is
    called once with 0 before the first file, then after each file. ``workers``:
    processes checking files in parallel (default: one per core, when the log is
    big enough to gain from it; 1: none). Raises :class:`VerifyError` for a path
    that does not exist, or when ``paths`` hold more than one stream (see
    :func:`verify_streams`).
    """
    reports = verify_streams(
        paths, public_key=public_key, checkpoints=checkpoints, progress=progress, workers=workers
    )
    if len(reports) > 1:
        raise VerifyError(
            f"{len(reports)} streams found; verify them one by one or with verify_streams()"
        )
    return reports[0]


def verify_streams(
    paths: Sequence[str | Path],
    *,
    public_key: Ed25519PublicKey | None = None,
    checkpoints: str | Path | None = None,
    progress: Callable[[int, int], None] | None = None,
    workers: int | None = None,
) -> list[Report]:
    """Verify every stream held by ``paths``: one :class:`Report` per stream.

    A directory can hold two streams (two live files side by side); each is checked
    on its own, with its own checkpoints file. ``checkpoints`` can only be given
    for a single stream. Otherwise as :func:`verify`.
    """
    found, directory_mode = stream_files(paths)
    if checkpoints is not None and len(found) > 1:
        raise VerifyError(f"--checkpoints names one file, but the paths hold {len(found)} streams")
    total = sum(f.size for stream in found for f in stream.files) or 1
    if progress is not None:
        progress(0, total)
    done = [0]

    def advance(size: int) -> None:
        done[0] += size
        if progress is not None:
            progress(done[0], total)

    # Millions of short-lived bytes objects: the cyclic GC would only rescan them.
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        with Summaries(workers, total) as summaries:
            return [
                _verify(stream, directory_mode, public_key, checkpoints, advance, summaries)
                for stream in found
            ]
    finally:
        if was_enabled:
            gc.enable()


def _verify(
    stream: Stream,
    directory_mode: bool,
    public_key: Ed25519PublicKey | None,
    checkpoints: str | Path | None,
    advance: Callable[[int], None],
    summaries: Summaries,
) -> Report:
    ordered = stream.files
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

    pending = summaries.submit([f.path for f in ordered], walker.wanted)
    for f, summary in zip(ordered, pending, strict=True):
        pred = f.predecessor
        first: dict[str, Any] = f.first or {}
        raw_details = first.get("details")
        details: dict[str, Any] = raw_details if isinstance(raw_details, dict) else {}
        after = walker.last.file if walker.last is not None else None
        if pred is not None and (after is None or after != _display_of(ordered, f.pred_place)):
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
        if report.first_seq is None and f.first_seq >= 0:
            report.first_seq = f.first_seq
            if f.first_seq == 0 and f.first_hash is not None:
                report.stream = f.first_hash
        joined = summary() if not walker.skip_link else None
        if joined is None or not walker.take(f.display, joined):
            try:
                data = read_all(str(f.path))
            except (OSError, EOFError, gzip.BadGzipFile, zlib.error) as exc:
                walker.problem(
                    _Where(f.display, 1, None), "modified", f"cannot be read: {type(exc).__name__}"
                )
                advance(f.size)
                continue
            if report.stream is None and f.first_seq == 0 and data:
                report.stream = "sha256:" + hashlib.sha256(data[: data.find(b"\n")]).hexdigest()
            walker.run_file(f.display, data)
        advance(f.size)
    walker.finish()
    report.last_seq = walker.last.seq if walker.last is not None else None

    if public_key is not None:
        for where, details in walker.log_checkpoints:
            if _check_signature(walker, where, details, report.stream):
                report.checkpoints_checked += 1
        _check_sidecar(walker, sidecar, report)
    report.problems.sort(key=lambda p: (_file_rank(report, p.file), p.line))
    return report


def _display_of(ordered: Iterable[LogFile], place: tuple[Path, str] | None) -> str | None:
    for f in ordered:
        if f.place == place:
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
