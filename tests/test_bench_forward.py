"""The forwarding benchmark runs end to end and prints its numbers as one JSON line."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.bench


def test_bench_forward_small_run(tmp_path: Path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            str(REPO / "benchmarks" / "bench_forward.py"),
            "--records",
            "200",
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
        "forwarder_rps",
        "forwarder_received",
        "sdk_rps",
        "sdk_received",
        "sdk_lost",
        "ratio",
    }
    assert numbers["records"] > 200  # the 200 events and the log's own audit.start
    assert numbers["forwarder_received"] == numbers["records"]
    assert numbers["sdk_received"] + numbers["sdk_lost"] == numbers["records"]
    assert numbers["ratio"] > 0
