"""One bad plugin never breaks the tool (issue 13): pip-installed broken plugins, every command.

The ``kerno-e2e-broken`` distribution (tests/e2e/conftest.py) has a plugin raising in each
hook, one registering an event type whose schema is not closed, one registering a rule that
raises, and one whose thread panics the daemon. With all of them loaded beside the example
plugin and the first-party ones, every command still does its job for everything else, each
failure is one stderr line naming the plugin, its distribution and why, and the log holds
the right ``plugin.error`` records.
"""

from __future__ import annotations

import json
import signal
import subprocess
from pathlib import Path
from typing import Any

import orjson
import pytest
from conftest import REGISTER_HOOKS, Venv
from helpers import stream_records, wait_until

DIST = "kerno-e2e-broken 0.1"
#: Every broken plugin but the panicker, each with the hook its failure names.
FAILING = {f"e2e_raise_{hook}": hook for hook in REGISTER_HOOKS}
FAILING["e2e_raise_make_analyzer"] = "make_analyzer"
FAILING["e2e_bad_schema"] = "register_event_types"
#: Loaded in most runs: the broken ones, the example, and first-party plugins to keep working.
GOOD = ["example", "lifecycle", "doctor", "procfs"]
RAISING_LATER = ["e2e_raise_daemon_startup", "e2e_raise_daemon_shutdown", "e2e_raise_config_reload"]
OPEN_REASON = (
    "event type 'e2e.open' from kerno-e2e-broken: details must be closed: "
    '"type": "object" and "additionalProperties": false'
)


def reason(plugin: str) -> str:
    if plugin == "e2e_bad_schema":
        return OPEN_REASON
    return f"{plugin.removeprefix('e2e_raise_')} is broken in this plugin"


def error_type(plugin: str) -> str:
    return "ValueError" if plugin == "e2e_bad_schema" else "RuntimeError"


def line(plugin: str, hook: str, kind: str, why: str) -> str:
    return f"kerno-otel: plugin {plugin!r} ({DIST}) failed in {hook}: {kind}: {why}"


def all_plugins(*extra: str) -> str:
    return ",".join([*GOOD, *FAILING, *extra])


def config_file(tmp_path: Path, log: Path, text: str = "") -> Path:
    config = tmp_path / "kerno.yaml"
    config.write_text(
        f"audit:\n  file_path: {log}\n"
        "http:\n  enabled: false\n"
        "doctor:\n  duration: 1s\n  interval: 1h\n" + text
    )
    return config


def errors(records: list[dict[str, Any]]) -> list[tuple[str, str, str]]:
    return [
        (r["details"]["plugin"], r["details"]["hook"], r["details"]["error_type"])
        for r in records
        if r["type"] == "plugin.error"
    ]


def test_plugins_lists_the_good_and_says_why_each_bad_one_failed(venv: Venv) -> None:
    done = venv.kerno("plugins", "--json", env=venv.env(all_plugins()))
    assert done.returncode == 0, done.stderr
    document = json.loads(done.stdout)
    loaded = {p["name"]: p for p in document["plugins"]}
    assert set(GOOD) <= set(loaded)
    # The plugin with a bad event type stays, with its good one; the bad one is refused.
    assert loaded["e2e_bad_schema"]["event_types"] == ["e2e.good"]
    assert loaded["example"]["event_types"] == ["example.export"]
    got = {(f["plugin"], f["hook"], f["error_type"], f["reason"]) for f in document["failures"]}
    # Everything but make_analyzer, which needs a running audit log to be asked.
    expected = {(p, FAILING[p], error_type(p), reason(p)) for p in FAILING}
    expected.discard(
        (
            "e2e_raise_make_analyzer",
            "make_analyzer",
            "RuntimeError",
            reason("e2e_raise_make_analyzer"),
        )
    )
    assert got == expected
    stderr = done.stderr.splitlines()
    for plugin, hook, kind, why in expected:
        assert line(plugin, hook, kind, why) in stderr


def test_schema_export_publishes_the_good_types_only(venv: Venv, tmp_path: Path) -> None:
    out = tmp_path / "schemas"
    done = venv.kerno("schema", "export", str(out), env=venv.env(all_plugins()))
    assert done.returncode == 0, done.stderr
    names = {p.name for p in out.iterdir()}
    assert {"e2e.good.schema.json", "example.export.schema.json", "bundle.schema.json"} <= names
    assert "e2e.open.schema.json" not in names
    assert line("e2e_bad_schema", "register_event_types", "ValueError", OPEN_REASON) in (
        done.stderr.splitlines()
    )


def test_run_validate_and_doctor_keep_working(venv: Venv, tmp_path: Path) -> None:
    log = tmp_path / "log" / "kerno-audit.jsonl"
    config = config_file(tmp_path, log)
    env = venv.env(all_plugins(*RAISING_LATER))

    # run: starts, takes a reload, stops on SIGTERM; exit 0.
    proc = subprocess.Popen(
        [str(venv.python), "-m", "kerno_otel", "run", "--config", str(config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert wait_until(lambda: "daemon.start" in _types(log), timeout=60)
        proc.send_signal(signal.SIGHUP)
        assert wait_until(lambda: "config.reload" in _types(log), timeout=60)
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, stderr
    records = stream_records(log)
    expected = [(p, FAILING[p], error_type(p)) for p in FAILING]
    expected += [(p, p.removeprefix("e2e_raise_"), "RuntimeError") for p in RAISING_LATER]
    assert sorted(errors(records)) == sorted(expected)
    types = [r["type"] for r in records]
    assert {"daemon.start", "config.reload", "daemon.stop", "example.export", "e2e.good"} <= set(
        types
    )
    for plugin, hook, kind in expected:
        assert line(plugin, hook, kind, reason(plugin)) in stderr.splitlines()
    assert "Traceback" not in stderr

    # audit validate: exit 0 on the log, with the same plugins (issue 13: it used to exit 1).
    validated = venv.kerno("audit", "validate", "--silent", str(log), env=env)
    assert (validated.returncode, validated.stdout) == (0, ""), validated.stderr

    # doctor: one cycle; the crashing rule is a plugin.error and the report says so.
    env = venv.env(all_plugins("e2e_crashing_rule", "e2e_source_raises"))
    doctor = venv.kerno("doctor", "--config", str(config), "-o", "json", env=env)
    assert doctor.returncode == 0, doctor.stderr
    report = json.loads(doctor.stdout)
    titles = {f["rule"]: f["title"] for f in report["findings"]}
    assert titles["e2e_crashing_rule"] == "rule failed: ZeroDivisionError"
    assert "no problems found" not in titles.get("healthy_system", "")
    assert (
        line(
            "e2e_crashing_rule",
            "rule:e2e_crashing_rule",
            "ZeroDivisionError",
            "this rule divides by zero",
        )
        in doctor.stderr.splitlines()
    )
    assert (
        line(
            "e2e_source_raises",
            "source:e2e_source",
            "OSError",
            "this source cannot open its device",
        )
        in doctor.stderr.splitlines()
    )
    recorded = errors(stream_records(log))
    assert ("e2e_crashing_rule", "rule:e2e_crashing_rule", "ZeroDivisionError") in recorded
    assert ("e2e_source_raises", "source:e2e_source", "OSError") in recorded


def test_a_raising_panic_hook_is_recorded_and_the_panic_still_ends_the_run(
    venv: Venv, tmp_path: Path
) -> None:
    log = tmp_path / "log" / "kerno-audit.jsonl"
    config = config_file(tmp_path, log)
    env = venv.env("lifecycle,e2e_panicker,e2e_raise_daemon_panic")
    done = venv.kerno("run", "--config", str(config), env=env, timeout=120)
    assert done.returncode == 70, done.stderr
    records = stream_records(log)
    assert "daemon.panic" in [r["type"] for r in records]
    assert ("e2e_raise_daemon_panic", "daemon_panic", "RuntimeError") in errors(records)


@pytest.mark.parametrize("plugins", ["nosuch", "lifecycle,nosuch"])
def test_an_unknown_plugin_name_is_said_not_silent(venv: Venv, plugins: str) -> None:
    done = venv.kerno("plugins", "--json", env=venv.env(plugins))
    assert done.returncode == 0, done.stderr
    failures = json.loads(done.stdout)["failures"]
    assert [(f["plugin"], f["hook"], f["error_type"]) for f in failures] == [
        ("nosuch", "load", "PluginNotFoundError")
    ]
    [said] = [text for text in done.stderr.splitlines() if "nosuch" in text]
    assert said.startswith(
        "kerno-otel: plugin 'nosuch' (not-installed 0) failed in load: PluginNotFoundError: "
        "KERNO_OTEL_PLUGINS names 'nosuch', but no installed plugin has that name "
        "(installed: "
    )
    assert said.endswith(" in all))")


def test_strict_turns_a_raising_startup_into_exit_2(venv: Venv, tmp_path: Path) -> None:
    log = tmp_path / "log" / "kerno-audit.jsonl"
    config = config_file(tmp_path, log, "plugins:\n  strict: true\n")
    env = venv.env("lifecycle,e2e_raise_daemon_startup")
    done = venv.kerno("run", "--config", str(config), env=env)
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    assert done.stderr.splitlines()[-1] == (
        f"Error: plugin 'e2e_raise_daemon_startup' ({DIST}) failed in daemon_startup: "
        "RuntimeError: daemon_startup is broken in this plugin (plugins.strict is on)"
    )
    assert errors(stream_records(log)) == [
        ("e2e_raise_daemon_startup", "daemon_startup", "RuntimeError")
    ]


def _types(log: Path) -> list[str]:
    try:
        return [orjson.loads(raw)["type"] for raw in log.read_bytes().splitlines() if raw]
    except (FileNotFoundError, orjson.JSONDecodeError):
        return []
