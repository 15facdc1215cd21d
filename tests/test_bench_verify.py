"""The verify benchmark runs end to end and prints its numbers as one JSON line."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.bench


def test_bench_verify_small_run(tmp_path: Path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            str(REPO / "benchmarks" / "bench_verify.py"),
            "--records",
            "500",
            "--max-size-mb",
            "0.05",
            "--out",
            str(tmp_path / "bench"),
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    numbers = json.loads(result.stdout.splitlines()[-1])
    assert set(numbers) == {
        "records",
        "files",
        "bytes",
        "checkpoints",
        "build_seconds",
        "verify_seconds",
        "verify_rps",
        "sha256sum_seconds",
        "verify_cpu_seconds",
        "sha256sum_cpu_seconds",
        "ratio",
    }
    assert numbers["records"] >= 500
    assert numbers["files"] >= 2
    assert numbers["ratio"] > 0
