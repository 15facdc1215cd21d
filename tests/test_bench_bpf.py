"""The BPF benchmark runs end to end on a tiny workload and prints its numbers as one JSON line."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from bpf_workloads import BPF_UNAVAILABLE, SKIP_REASON

REPO = Path(__file__).resolve().parent.parent

pytestmark = [
    pytest.mark.bench,
    pytest.mark.skipif(BPF_UNAVAILABLE is not None, reason=SKIP_REASON),
]


def test_bench_bpf_tiny_run() -> None:
    result = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "bench_bpf.py"), "--tiny", "--repeats", "1"],
        capture_output=True,
        text=True,
        check=False,
        timeout=240,
    )
    assert result.returncode == 0, result.stderr
    numbers = json.loads(result.stdout.splitlines()[-1])
    for key in ("mix_overhead_pct", "mix_floor_pct", "storm_overhead_pct", "storm_floor_pct"):
        assert isinstance(numbers[key], float), key
    assert numbers["mix_baseline_cpu_s"] > 0 and numbers["storm_baseline_cpu_s"] > 0
    assert numbers["repeats"] == 1
    assert result.stderr.count("repeat 1/1") == 3  # baseline, floor, programs
