"""The collector configs in docs/collector/: wired pipelines, the filelog pattern and layout."""

from __future__ import annotations

import fnmatch
import os
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from kerno_otel.audit.chain import Timestamps
from kerno_otel.audit.files import rotated_name
from kerno_otel.config.audit import default_audit_path

DOCS = Path(__file__).resolve().parent.parent / "docs"
CONFIGS = DOCS / "collector"


def load(name: str) -> dict[str, Any]:
    data = yaml.safe_load((CONFIGS / name).read_text())
    assert isinstance(data, dict)
    return data


def check_wired(config: dict[str, Any]) -> dict[str, Any]:
    """Every component a pipeline names is defined, every extension used is enabled."""
    logs = config["service"]["pipelines"]["logs"]
    for kind in ("receivers", "processors", "exporters"):
        for name in logs.get(kind, []):
            assert name in config[kind], f"{kind}: {name} is used but not defined"
    enabled = set(config["service"].get("extensions", []))
    for section in ("receivers", "exporters"):
        for component in config[section].values():
            storage = (component or {}).get("storage") or (
                (component or {}).get("sending_queue") or {}
            ).get("storage")
            if storage:
                assert storage in enabled and storage in config["extensions"]
    return dict(logs)


def test_agent_receives_otlp_and_sends_to_the_gateway() -> None:
    config = load("agent.yaml")
    logs = check_wired(config)
    assert logs["receivers"] == ["otlp"]
    assert "batch" in logs["processors"]
    assert logs["exporters"] == ["otlp/gateway"]
    assert config["receivers"]["otlp"]["protocols"]["grpc"]["endpoint"] == "127.0.0.1:4317"
    exporter = config["exporters"]["otlp/gateway"]
    assert exporter["retry_on_failure"]["max_elapsed_time"] == 0
    assert exporter["sending_queue"]["enabled"] is True


def test_gateway_receives_otlp_and_sends_on() -> None:
    config = load("gateway.yaml")
    logs = check_wired(config)
    assert logs["receivers"] == ["otlp"]
    assert "batch" in logs["processors"]
    assert [name.split("/")[0] for name in logs["exporters"]] == ["otlp"]
    assert "client_ca_file" in config["receivers"]["otlp"]["protocols"]["grpc"]["tls"]


def _go_layout_regex(layout: str) -> re.Pattern[str]:
    """A regex for the Go reference-time tokens a timestamp layout uses."""
    tokens = {
        "2006": r"\d{4}",
        "01": r"\d{2}",
        "02": r"\d{2}",
        "15": r"\d{2}",
        "04": r"\d{2}",
        "05": r"\d{2}",
        ".999999999": r"(\.\d{1,9})?",
        ".000000000": r"\.\d{9}",
        "Z07:00": r"(Z|[+-]\d{2}:\d{2})",
    }
    pattern = ""
    rest = layout
    while rest:
        for token, regex in sorted(tokens.items(), key=lambda kv: -len(kv[0])):
            if rest.startswith(token):
                pattern += regex
                rest = rest[len(token) :]
                break
        else:
            pattern += re.escape(rest[0])
            rest = rest[1:]
    return re.compile(pattern + r"\Z")


def test_filelog_reads_live_and_rotated_files_and_parses_ts(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    config = load("filelog.yaml")
    logs = check_wired(config)
    receiver = config["receivers"][logs["receivers"][0]]
    assert receiver["start_at"] == "beginning"
    assert receiver["storage"] in config["extensions"]
    # The default log path of the daemon (it runs as root): issue 13, item 5.
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    live = Path(default_audit_path())
    assert str(live) == "/var/log/kerno/kerno-audit.jsonl"
    rotated = rotated_name(live, 1_795_802_400_123_456_789)
    assert rotated == "kerno-audit-20261127T180000.123456Z.jsonl"
    for name in (live.name, rotated, rotated + ".gz"):
        path = str(live.parent / name)
        assert any(fnmatch.fnmatch(path, pattern) for pattern in receiver["include"]), name
    for sidecar in (".cursor", ".lock", ".checkpoints"):
        assert not any(fnmatch.fnmatch(str(live) + sidecar, p) for p in receiver["include"])
    parser = next(op for op in receiver["operators"] if op["type"] == "json_parser")
    timestamp = parser["timestamp"]
    assert timestamp["parse_from"] == "attributes.ts"
    assert timestamp["layout_type"] == "gotime"
    ts = Timestamps().format(1_795_802_400_123_456_789)
    assert ts == "2026-11-27T18:00:00.123456789Z"
    assert _go_layout_regex(timestamp["layout"]).match(ts)
    assert parser["severity"]["parse_from"] == "attributes.severity"


def test_each_config_says_which_collector_build_it_needs() -> None:
    # file_storage and filelog are contrib components, not in the core otelcol build.
    for path in CONFIGS.iterdir():
        text = path.read_text()
        uses_contrib = "file_storage" in text or "filelog" in text
        assert not uses_contrib or "opentelemetry-collector-contrib" in text, path.name


def test_the_doc_points_at_every_config() -> None:
    text = (DOCS / "collector.md").read_text()
    for path in CONFIGS.iterdir():
        assert f"collector/{path.name}" in text


def test_telemetry_sends_traces_logs_and_metrics_each_to_its_backend() -> None:
    config = load("telemetry.yaml")
    pipelines = config["service"]["pipelines"]
    assert set(pipelines) == {"traces", "logs", "metrics"}
    for pipeline in pipelines.values():
        for kind in ("receivers", "processors", "exporters"):
            for name in pipeline[kind]:
                assert name in config[kind], f"{kind}: {name} is used but not defined"
    assert pipelines["traces"]["exporters"] == ["otlp/tempo"]
    assert pipelines["logs"]["exporters"] == ["otlphttp/loki"]
    # One receiver for the daemon's spans and metrics and the forwarder's records.
    assert {p["receivers"][0] for p in pipelines.values()} == {"otlp"}
