"""The pipeline benchmark's output, checked as a reviewer would: two validators and the chain."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import orjson
import pytest
from helpers import check_chain, stream_lines
from jsonschema import Draft202012Validator
from referencing import Registry, Resource

from kerno_otel.audit.files import rotated_files

REPO = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.bench


def independent_validator() -> Draft202012Validator:
    """python-jsonschema over the files under schemas/, nothing from kerno_otel."""
    directory = REPO / "schemas" / "kerno-audit" / "v1"
    documents = [json.loads(p.read_text()) for p in sorted(directory.glob("*.schema.json"))]
    registry: Registry[object] = Registry().with_resources(
        (doc["$id"], Resource.from_contents(doc)) for doc in documents
    )
    record = json.loads((directory / "record.schema.json").read_text())
    return Draft202012Validator(record, registry=registry)


def test_benchmark_output_validates_and_chains_across_rotation(tmp_path: Path) -> None:
    config = tmp_path / "kerno.yaml"
    # Small files, so a few hundred records still rotate (and gzip) several times.
    config.write_text("audit:\n  max_size_mb: 0.04\n  compress: true\n")
    out = tmp_path / "bench"
    result = subprocess.run(
        [
            sys.executable,
            str(REPO / "benchmarks" / "bench_pipeline.py"),
            "--records",
            "500",
            "--out",
            str(out),
            "--config",
            str(config),
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    figures = json.loads(result.stdout.strip().splitlines()[-1])
    assert {
        "records",
        "written",
        "lost",
        "pipeline_rps",
        "baseline_rps",
        "ratio",
        "emit_p50_us",
        "emit_p99_us",
    } <= set(figures)
    assert (figures["records"], figures["written"], figures["lost"]) == (500, 500, 0)

    live = out / "pipeline" / "kerno-audit.jsonl"
    files = [*rotated_files(live), live]
    assert len(files) >= 3
    assert any(p.name.endswith(".gz") for p in files)

    cli = subprocess.run(
        [sys.executable, "-m", "kerno_otel", "audit", "validate", *map(str, files)],
        capture_output=True,
        text=True,
        check=False,
    )
    lines = stream_lines(live)
    assert cli.stdout == ""
    assert cli.stderr == f"checked {len(lines):,} lines in {len(files)} files: all valid\n"
    assert cli.returncode == 0

    reference = independent_validator()
    for line in lines:
        errors = list(reference.iter_errors(orjson.loads(line)))
        assert errors == []

    assert check_chain(lines) == []
    types = {orjson.loads(line)["type"] for line in lines}
    assert {"audit.start", "audit.rotate"} <= types
    assert {
        "daemon.start",
        "daemon.stop",
        "daemon.panic",
        "config.reload",
        "ai.call",
        "finding.emit",
        "auth.failure",
        "bpf.load",
        "plugin.load",
        "plugin.error",
    } <= types
