"""The query benchmark runs end to end and prints its numbers as one JSON line."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.bench


@pytest.mark.parametrize("compress", [False, True], ids=["plain", "compressed"])
def test_bench_query_small_run(tmp_path: Path, compress: bool) -> None:
    if shutil.which("jq") is None:
        pytest.skip("jq is not installed (scripts/setup-review.sh installs it as root)")
    result = subprocess.run(
        [
            sys.executable,
            str(REPO / "benchmarks" / "bench_query.py"),
            "--records",
            "500",
            "--max-size-mb",
            "0.05",
            "--out",
            str(tmp_path / "bench"),
            *(["--compress"] if compress else []),
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
        "matched",
        "build_seconds",
        "query_seconds",
        "query_rps",
        "jq_seconds",
        "jq_rps",
        "query_cpu_seconds",
        "jq_cpu_seconds",
        "ratio",
    }
    # Every file's records, the rotated .gz ones too (their lines were not counted).
    assert numbers["records"] >= 500
    assert numbers["files"] >= 2
    assert 0 < numbers["matched"] < numbers["records"]
    assert numbers["ratio"] > 0
