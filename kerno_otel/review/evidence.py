"""Making an evidence bundle from a log, and checking one: the steps around ``bundle.py``.

The report inside a bundle is made from the bundle's own copy of the logs (paths
relative to the bundle: ``logs/...``), so checking a bundle can make it again from
what the bundle holds and compare: a report edited to hide a problem is caught.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kerno_otel.audit.keys import key_id, load_public
from kerno_otel.records.schema import SchemaSet
from kerno_otel.review import bundle
from kerno_otel.review.html import render
from kerno_otel.review.reading import ReadError
from kerno_otel.review.report import report_of
from kerno_otel.verify.order import VerifyError, stream_files
from kerno_otel.verify.report import Report
from kerno_otel.verify.verify import verify_streams

SCHEMA_DIR = "schemas/kerno-audit/v1"


def report_json(report: dict[str, Any]) -> str:
    """The report's JSON text as ``--json`` prints it: indented, so diffs read per line."""
    return json.dumps(report, indent=2, ensure_ascii=False) + "\n"


def make(
    paths: Sequence[str | Path], key_path: Path, out: Path, schemas: SchemaSet
) -> dict[str, Any]:
    """Write the bundle for the log in ``paths`` to ``out``; returns its report.

    Raises :class:`~kerno_otel.verify.order.VerifyError` (paths),
    :class:`~kerno_otel.audit.keys.KeyFileError` (key) or :class:`bundle.BundleError`.
    """
    public = load_public(key_path)
    streams, _ = stream_files(paths)
    logs = [f.path for s in streams for f in s.files]
    reports = verify_streams(paths, public_key=public)
    logs += [Path(r.checkpoints_file) for r in reports if r.checkpoints_file is not None]
    names = [p.name for p in logs]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise bundle.BundleError(
            f"two files named {repeated[0]} come from different directories; "
            "bundle one log at a time"
        )
    with bundle.private_directory() as tmp:
        stage = Path(tmp)
        (stage / "logs").mkdir()
        for path in logs:
            shutil.copyfile(path, stage / "logs" / path.name)
        report = bundle.relative(report_of([stage / "logs"], public), str(stage))
        assert isinstance(report, dict)
        members = [
            bundle.Member(f"logs/{p.name}", (stage / "logs" / p.name).read_bytes()) for p in logs
        ]
    members.append(bundle.Member(bundle.KEY_MEMBER, key_path.read_bytes()))
    with bundle.private_directory() as tmp:
        # The files exactly as `kerno-otel schema export` writes them.
        for path in sorted(schemas.export(Path(tmp))):
            members.append(bundle.Member(f"{SCHEMA_DIR}/{path.name}", path.read_bytes()))
    members.append(bundle.Member("report.json", report_json(report).encode()))
    members.append(bundle.Member("report.html", render(report).encode()))
    bundle.write(out, members)
    return report


@dataclass
class Checked:
    """What checking a bundle found."""

    problems: list[str] = field(default_factory=list)
    files: int = 0
    key_id: str | None = None
    reports: list[Report] = field(default_factory=list)

    @property
    def intact(self) -> bool:
        return not self.problems and all(r.intact for r in self.reports)


def check(path: Path, key_path: str | None = None) -> Checked:
    """Check a bundle as it is: its layers, SHA256SUMS, the logs, and its report."""
    checked = Checked()
    with bundle.private_directory() as tmp:
        root = Path(tmp)
        opened = bundle.open_bundle(path, root)
        checked.problems.extend(opened.problems)
        checked.files = len(opened.files)
        logs = root / "logs"
        key_file = Path(key_path) if key_path is not None else root / bundle.KEY_MEMBER
        if not logs.is_dir() or not any(logs.iterdir()):
            if not checked.problems:
                checked.problems.append(f"{path}: holds no logs/")
            return checked
        public = None
        try:
            public = load_public(key_file)
            checked.key_id = key_id(public)
        except (OSError, ValueError) as e:
            reason = bundle.relative(str(e), str(root))
            checked.problems.append(f"{bundle.KEY_MEMBER}: not a usable public key ({reason})")
        try:
            reports = verify_streams([logs], public_key=public)
        except VerifyError as e:
            checked.problems.append(f"logs/: {e}")
            return checked
        for r in reports:
            _relative_report(r, str(root))
        checked.reports = reports
        try:
            made = bundle.relative(report_of([logs], public), str(root))
        except (ReadError, VerifyError) as e:
            reason = str(bundle.relative(str(e), str(root)))
            checked.problems.append(f"report.json: cannot be made again from the logs: {reason}")
            return checked
        kept = root / "report.json"
        try:
            held = json.loads(kept.read_text(encoding="utf-8")) if kept.exists() else None
        except (ValueError, UnicodeDecodeError):
            held = None
        if held != made:
            checked.problems.append(
                "report.json: does not match the report of the logs in the bundle"
            )
    return checked


def _relative_report(report: Report, root: str) -> None:
    prefix = root.rstrip("/") + "/"
    report.files = [f.replace(prefix, "") for f in report.files]
    if report.checkpoints_file is not None:
        report.checkpoints_file = report.checkpoints_file.replace(prefix, "")
    report.problems = [
        type(p)(
            p.file.replace(prefix, ""), p.line, p.seq, p.kind, p.explanation.replace(prefix, "")
        )
        for p in report.problems
    ]
    report.not_checked = [n.replace(prefix, "") for n in report.not_checked]
