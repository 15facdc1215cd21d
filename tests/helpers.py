"""Shared test helpers: read a whole log stream back in order."""

from __future__ import annotations

import gzip
from pathlib import Path
from typing import Any

import orjson

from kerno_otel.audit.files import rotated_files


def stream_lines(live: Path) -> list[bytes]:
    """Every line of the stream (rotated files oldest first, then the live file), no newlines."""
    lines: list[bytes] = []
    for path in [*rotated_files(live), live]:
        if not path.exists():
            continue
        data = (
            gzip.decompress(path.read_bytes()) if path.name.endswith(".gz") else path.read_bytes()
        )
        assert data == b"" or data.endswith(b"\n"), f"{path} does not end with a newline"
        lines.extend(data.splitlines())
    return lines


def stream_records(live: Path) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in stream_lines(live)]


def fake_distribution(site: Path, name: str, version: str, modules: dict[str, str]) -> None:
    """A minimal installed distribution under ``site`` (put it on PYTHONPATH).

    importlib.metadata finds ``*.dist-info`` directories on sys.path, so the
    entry points in it load exactly as a pip-installed plugin's would, without
    touching the test environment.
    """
    site.mkdir(parents=True, exist_ok=True)
    info = site / f"{name.replace('-', '_')}-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    lines = ["[kerno_otel.plugins]"]
    for module, source in modules.items():
        (site / f"{module}.py").write_text(source)
        lines.append(f"{module.removeprefix('kerno_test_')} = {module}")
    (info / "entry_points.txt").write_text("\n".join(lines) + "\n")
