"""The forwarding benchmark runs end to end and prints its numbers as one JSON line."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def test_bench_forward_small_run(tmp_path: Path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            str(REPO / "benchmarks" / "bench_forward.py"),
            "--records",
            "1000",
            "--out",
            str(tmp_path / "bench"),
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
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
    assert numbers["records"] > 1000
    assert numbers["forwarder_received"] == numbers["records"]
    assert numbers["sdk_received"] + numbers["sdk_lost"] == numbers["records"]
    assert numbers["ratio"] > 0
