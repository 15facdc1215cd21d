"""The hostile-redaction benchmark runs end to end and prints its numbers as one JSON line."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.bench


def test_bench_redact_small_run() -> None:
    result = subprocess.run(
        [
            sys.executable,
            str(REPO / "benchmarks" / "bench_redact.py"),
            "--kb",
            "2",
            "--repeat",
            "1",
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    numbers = json.loads(result.stdout.splitlines()[-1])
    assert set(numbers) == {
        "kb",
        "baseline_ms",
        "worst_case",
        "worst_ms",
        "worst_ratio",
        "worst_growth",
        "cases",
    }
    assert numbers["worst_case"] in numbers["cases"]
    assert all(c["redact_ms"] >= 0 and c["growth"] >= 0 for c in numbers["cases"].values())
