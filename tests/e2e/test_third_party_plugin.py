"""The example third-party plugin (docs/examples/), pip-installed in a fresh venv, found by its
entry point, as docs/plugins.md tells a plugin author."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import orjson
from conftest import Venv


def test_pip_installed_plugin_is_listed_validated_and_logged(venv: Venv, tmp_path: Path) -> None:
    python = venv.python
    env = venv.env("example,lifecycle")

    listed = subprocess.run(
        [str(python), "-m", "kerno_otel", "plugins", "--json"],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert listed.returncode == 0, listed.stderr
    plugins = {p["name"]: p for p in json.loads(listed.stdout)["plugins"]}
    assert plugins["example"] == {
        "name": "example",
        "distribution": "kerno-otel-example",
        "version": "1.0.0",
        "hooks": ["daemon_startup", "register_event_types", "register_redaction_rules"],
        "event_types": ["example.export"],
    }

    shown = subprocess.run(
        [str(python), "-m", "kerno_otel", "schema", "show", "example.export"],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["required"] == ["destination", "records"]

    log = tmp_path / "log" / "kerno-audit.jsonl"
    env["KERNO_AUDIT_FILE_PATH"] = str(log)
    run = subprocess.run(
        [str(python), "-m", "kerno_otel", "run", "--duration", "0.5s"],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    records = [orjson.loads(line) for line in log.read_bytes().splitlines()]
    exports = [r for r in records if r["type"] == "example.export"]
    assert len(exports) == 1
    assert exports[0]["actor"] == "example/exporter"
    assert exports[0]["details"] == {
        "destination": "s3 bucket for [REDACTED:ticket] via [REDACTED:ip]",
        "records": 3,
    }
    loads = [r["details"]["plugin"] for r in records if r["type"] == "plugin.load"]
    assert loads == ["example", "lifecycle"]

    validated = subprocess.run(
        [str(python), "-m", "kerno_otel", "audit", "validate", str(log)],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert validated.returncode == 0, validated.stdout
    # Without the plugin, its records are unknown to the validator.
    env["KERNO_OTEL_PLUGINS"] = "lifecycle"
    strict = subprocess.run(
        [str(python), "-m", "kerno_otel", "audit", "validate", str(log)],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert strict.returncode == 1
    assert "example.export: /type: 'enum' rule failed (unknown event type)" in strict.stdout
