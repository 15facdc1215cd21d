"""The telemetry benchmark runs end to end on a few records (a smoke test, not a measurement)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.bench


def test_bench_telemetry_reports_every_run(tmp_path: Path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            str(REPO / "benchmarks" / "bench_telemetry.py"),
            "--records",
            "300",
            "--repeat",
            "1",
            "--out",
            str(tmp_path / "out"),
        ],
        capture_output=True,
        text=True,
        cwd=REPO / "benchmarks",
        check=False,
        timeout=240,
    )
    assert result.returncode == 0, result.stderr
    figures = json.loads(result.stdout.splitlines()[-1])
    assert figures["records"] == 300
    for mode in ("off", "off_spans", "on_shared", "on_per_record"):
        assert figures[f"{mode}_rps"] > 0
    assert figures["span_us"] > 0 and figures["scrape_ms"] > 0
    # One exported span per record in the worst-case run: the spans really went out.
    assert "on_per_record:" in result.stdout and "300 spans exported" in result.stdout
    # Records of the traced run carry their span's ids; the untraced run's none.
    for mode, traced in (("off", 0), ("on_per_record", 300)):
        lines = (tmp_path / "out" / mode / "kerno-audit.jsonl").read_bytes().splitlines()
        assert sum(b'"trace_id":' in line for line in lines) == traced
