"""Hostile configs (issue 11, items 12 and 14): every key with a wrong type, NaN, inf, a huge or
negative number; mistyped sections; config files others can change.

Each is a one-line error naming the file, line and key, exit 2 from ``kerno-otel run``,
no traceback; over SIGHUP, a refused reload that changes nothing.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from dataclasses import fields
from pathlib import Path
from typing import Any

import pytest
import yaml
from helpers import fake_distribution
from test_daemon import Daemon, started, validate  # noqa: F401  (started is a fixture)

from kerno_otel.config import AuditConfig, ConfigError, load_config
from kerno_otel.config.sections import SECTION_DEFAULTS
from kerno_otel.config.values import NUMBERS

#: What a number must never be; each is refused for every numeric key.
HOSTILE_NUMBERS: dict[str, str] = {
    "nan": ".nan",
    "inf": ".inf",
    "-inf": "-.inf",
    "huge-int": "1" + "0" * 30,
    "huge-float": "1.0e+300",
    "negative": "-1",
    "text": "lots",
    "bool": "true",
    "list": "[1, 2]",
}


def _nested_yaml(dotted: str, value: str) -> tuple[str, int]:
    """YAML setting ``dotted`` to the literal ``value``, and the line the last key is on."""
    parts = dotted.split(".")
    lines = [f"{'  ' * depth}{part}:" for depth, part in enumerate(parts[:-1])]
    lines.append(f"{'  ' * (len(parts) - 1)}{parts[-1]}: {value}")
    return "\n".join(lines) + "\n", len(lines)


def _load(tmp_path: Path, text: str) -> tuple[Path, Any]:
    path = tmp_path / "kerno.yaml"
    path.write_text(text)
    path.chmod(0o600)
    return path, lambda: load_config(path, env={})


@pytest.mark.parametrize("dotted", sorted(NUMBERS))
def test_every_numeric_key_refuses_hostile_numbers(tmp_path: Path, dotted: str) -> None:
    for name, literal in HOSTILE_NUMBERS.items():
        text, line = _nested_yaml(dotted, literal)
        path, load = _load(tmp_path, text)
        with pytest.raises(ConfigError) as info:
            load()
        message = str(info.value)
        assert message.startswith(f"{path}:{line}: {dotted}: expected "), (name, message)
        assert "\n" not in message and "Traceback" not in message


def _wrong_type(default: Any) -> str:
    """A YAML literal whose type no key with this default takes."""
    if isinstance(default, dict):
        return "[1, 2]"
    return "{x: 1}"


def _every_key() -> list[tuple[str, Any]]:
    keys: list[tuple[str, Any]] = []
    for f in fields(AuditConfig):
        if f.name == "checkpoint":
            keys += [
                ("audit.checkpoint.key_file", None),
                ("audit.checkpoint.every_records", 1),
                ("audit.checkpoint.every_seconds", 1.0),
            ]
        else:
            keys.append((f"audit.{f.name}", None))
    for section, defaults in SECTION_DEFAULTS.items():
        for key, default in defaults.items():
            keys.append((f"{section}.{key}", default))
    return keys


@pytest.mark.parametrize(("dotted", "default"), _every_key())
def test_every_key_refuses_a_wrong_type(tmp_path: Path, dotted: str, default: Any) -> None:
    text, line = _nested_yaml(dotted, _wrong_type(default))
    path, load = _load(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load()
    message = str(info.value)
    assert message.startswith(f"{path}:{line}: {dotted}"), message
    assert "\n" not in message


def _run(
    config: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("KERNO_")}
    base["KERNO_OTEL_PLUGINS"] = "lifecycle"
    return subprocess.run(
        [sys.executable, "-m", "kerno_otel", "run", "--config", str(config), *args],
        capture_output=True,
        text=True,
        env={**base, **(env or {})},
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize(
    ("text", "line", "error"),
    [
        ("audit:\n  max_size_mb: .nan\n", 2, "audit.max_size_mb: expected a number above 0"),
        ("audit:\n  max_size_mb: .inf\n", 2, "audit.max_size_mb: expected a number above 0"),
        ("audit:\n  queue_size: 1e21\n", 2, "audit.queue_size: expected a whole number from 16"),
        ("audit:\n  max_age_days: .nan\n", 2, "audit.max_age_days: expected a number from 0"),
        (
            "doctor:\n  thresholds:\n    oom_memory_pct: .nan\n",
            3,
            "doctor.thresholds.oom_memory_pct",
        ),
        (
            "audit:\n  fsync: batch\nadit:\n  fsync: always\n",
            3,
            "adit: unknown section (did you mean 'audit'?",
        ),
    ],
)
def test_run_exits_2_with_one_line(tmp_path: Path, text: str, line: int, error: str) -> None:
    config = tmp_path / "kerno.yaml"
    config.write_text(f"# audit goes to {tmp_path}\n" + text)
    result = _run(config, env={"KERNO_AUDIT_FILE_PATH": str(tmp_path / "a.jsonl")})
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith(f"Error: {config}:{line + 1}: {error}"), result.stderr
    assert result.stderr.count("\n") == 1
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "a.jsonl").exists()


def test_plugin_sections_are_known_sections(tmp_path: Path) -> None:
    # First-party plugins' sections, and a third-party plugin's (an installed entry
    # point, loaded or not), are not typos.
    site = tmp_path / "site"
    fake_distribution(site, "kerno-acme", "1.0", {"kerno_test_acme": "X = 1\n"})
    config = tmp_path / "kerno.yaml"
    config.write_text(
        "webhook:\n  url: https://example.invalid/hook\nauth:\n  {}\nacme:\n  anything: 1\n"
    )
    result = _run(
        config,
        "--print-path",
        env={"PYTHONPATH": str(site), "KERNO_AUDIT_FILE_PATH": str(tmp_path / "a.jsonl")},
    )
    assert result.returncode == 0, result.stderr
    # Without the distribution, "acme" is unknown, and the close match is offered.
    config.write_text("acmee:\n  anything: 1\n")
    result = _run(config, "--print-path", env={"PYTHONPATH": str(site)})
    assert result.returncode == 2
    assert "acmee: unknown section (did you mean 'acme'?" in result.stderr
    result = _run(config, "--print-path")
    assert result.returncode == 2
    assert "acmee: unknown section (sections: ai, audit, bpf" in result.stderr


# --- who may write the file ----------------------------------------------------------------


def test_group_or_world_writable_config_is_refused(tmp_path: Path) -> None:
    config = tmp_path / "kerno.yaml"
    config.write_text("audit:\n  fsync: always\n")
    for mode, who in ((0o666, "others"), (0o620, "its group")):
        config.chmod(mode)
        with pytest.raises(ConfigError) as info:
            load_config(config, env={})
        assert str(info.value) == (
            f"{config}: refused: writable by {who} (mode {mode:04o}); chmod go-w {config}"
        )
    config.chmod(0o644)
    assert load_config(config, env={}).audit.fsync == "always"


def test_own_symlink_is_followed_and_checked(tmp_path: Path) -> None:
    target = tmp_path / "real.yaml"
    target.write_text("audit:\n  fsync: never\n")
    link = tmp_path / "kerno.yaml"
    link.symlink_to(target)
    assert load_config(link, env={}).audit.fsync == "never"
    target.chmod(0o646)
    with pytest.raises(ConfigError, match=r"refused: writable by others"):
        load_config(link, env={})
    loop = tmp_path / "loop.yaml"
    loop.symlink_to(loop)
    with pytest.raises(ConfigError, match=r"refused: more than 8 symlinks"):
        load_config(loop, env={})
    fifo = tmp_path / "fifo.yaml"
    os.mkfifo(fifo)
    with pytest.raises(ConfigError, match=r"refused: not a regular file"):
        load_config(fifo, env={})


@pytest.mark.skipif(os.geteuid() != 0, reason="changing a file's owner needs root")
def test_files_and_links_of_other_users_are_refused(tmp_path: Path) -> None:
    target = tmp_path / "real.yaml"
    target.write_text("audit:\n  fsync: never\n")
    os.chown(target, 65534, 65534)
    with pytest.raises(ConfigError) as info:
        load_config(target, env={})
    assert "refused: owned by " in str(info.value)
    assert "not by root or the user kerno-otel runs as" in str(info.value)
    os.chown(target, 0, 0)
    link = tmp_path / "kerno.yaml"
    link.symlink_to(target)
    os.lchown(link, 65534, 65534)  # planted by another user
    with pytest.raises(ConfigError) as info:
        load_config(link, env={})
    assert str(info.value).startswith(f"{link}: refused: {link} is a symlink owned by ")


# --- reloads ---------------------------------------------------------------------------------


def test_nan_reload_is_refused_and_changes_nothing(
    tmp_path: Path,
    started: list[Daemon],  # noqa: F811
) -> None:
    daemon = Daemon(tmp_path, "  max_size_mb: 50\ndoctor:\n  interval: 30s\n", "lifecycle")
    started.append(daemon)
    daemon.wait_for("daemon.start")
    head = f"audit:\n  file_path: {daemon.log}\n"
    hostile = {
        "  max_size_mb: .nan\n": "audit.max_size_mb: expected a number above 0, up to "
        "1048576, got NaN",
        "  queue_size: 1" + "0" * 21 + "\n": "audit.queue_size: expected a whole number "
        "from 16 to 16777216, got a 70-bit number",
        "adit:\n  fsync: always\n": "adit: unknown section (did you mean 'audit'?",
    }
    for text in hostile:
        daemon.config.write_text(head + text + "doctor:\n  interval: 10s\n")
        daemon.proc.send_signal(signal.SIGHUP)
        daemon.expect("kerno-otel: reload refused, old config kept: ")
    failed = daemon.wait_for("config.reload", 3)
    assert [r["outcome"] for r in failed] == ["failure"] * 3
    assert [r["details"]["changes"] for r in failed] == [[]] * 3
    for record, error in zip(failed, hostile.values(), strict=True):
        # FILE:LINE (the file's path reduced to its top directory by redaction), then the key.
        assert f"yaml:3: {error}" in record["details"]["error"] or (
            f"]:3: {error}" in record["details"]["error"]
        ), record["details"]["error"]
    # The config in force is still the first one: a valid reload diffs against it.
    daemon.config.write_text(head + "  max_size_mb: 60\ndoctor:\n  interval: 30s\n")
    daemon.proc.send_signal(signal.SIGHUP)
    ok = daemon.wait_for("config.reload", 4)[3]
    assert ok["outcome"] == "success"
    assert ok["details"]["changes"] == [
        {"field": "audit.max_size_mb", "before": 50.0, "after": 60.0}
    ]
    assert daemon.stop() == 0
    validate(daemon.log)


def test_yaml_literals_behave_as_assumed() -> None:
    # PyYAML (YAML 1.1) reads "1e21" as text and ".nan" as a float NaN: the checks
    # above depend on both.
    assert yaml.safe_load("a: 1e21") == {"a": "1e21"}
    value = yaml.safe_load("a: .nan")["a"]
    assert isinstance(value, float) and value != value
