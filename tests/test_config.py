from __future__ import annotations

from pathlib import Path

import pytest

from kerno_otel.config import (
    AuditConfig,
    CheckpointConfig,
    ConfigError,
    load_config,
    parse_duration,
)


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "kerno.yaml"
    path.write_text(text)
    return path


def test_defaults_when_no_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    config = load_config(env={})
    assert config.audit == AuditConfig()
    assert config.source is None or config.source == "/etc/kerno/kerno.yaml"


def test_audit_section_from_yaml(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "audit:\n"
        "  file_path: /tmp/x/audit.jsonl\n"
        "  max_size_mb: 5\n"
        "  fsync: always\n"
        "  rotate_interval: 24h\n"
        "  compress: true\n"
        "  checkpoint:\n"
        "    every_records: 100\n"
        "    every_seconds: 5m\n"
        "doctor:\n"
        "  interval: 30s\n",
    )
    config = load_config(path, env={})
    assert config.audit.file_path == "/tmp/x/audit.jsonl"
    assert config.audit.max_size_mb == 5.0
    assert config.audit.fsync == "always"
    assert config.audit.rotate_interval == 86400.0
    assert config.audit.compress is True
    assert config.audit.checkpoint == CheckpointConfig(every_records=100, every_seconds=300.0)
    assert config.section("doctor")["interval"] == "30s"
    assert config.section("doctor")["duration"] == "30s"  # the embedded default
    assert config.section("http")["listen"] == "127.0.0.1:9090"
    assert config.source == str(path)


def test_env_overrides_file(tmp_path: Path) -> None:
    path = write(tmp_path, "audit:\n  fsync: always\n")
    env = {
        "KERNO_AUDIT_FSYNC": "never",
        "KERNO_AUDIT_MAX_SIZE_MB": "0.5",
        "KERNO_AUDIT_CHECKPOINT_EVERY_RECORDS": "7",
    }
    config = load_config(path, env=env)
    assert config.audit.fsync == "never"
    assert config.audit.max_size_mb == 0.5
    assert config.audit.checkpoint.every_records == 7


def test_kerno_config_env_names_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, "audit:\n  max_backups: 3\n")
    assert load_config(env={"KERNO_CONFIG": str(path)}).audit.max_backups == 3


def test_bad_choice_names_file_line_and_key(tmp_path: Path) -> None:
    path = write(tmp_path, "# comment\naudit:\n  max_size_mb: 10\n  fsync: sometimes\n")
    with pytest.raises(ConfigError) as info:
        load_config(path, env={})
    assert str(info.value) == (
        f"{path}:4: audit.fsync: expected one of batch, always, never, got 'sometimes'"
    )


def test_unknown_key_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, "audit:\n  fsync_intervall_ms: 10\n")
    with pytest.raises(ConfigError) as info:
        load_config(path, env={})
    assert str(info.value).startswith(f"{path}:2: audit.fsync_intervall_ms: unknown key (known: ")


def test_bad_env_value_names_the_variable(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, ""), env={"KERNO_AUDIT_ON_OVERFLOW": "explode"})
    assert str(info.value) == (
        "KERNO_AUDIT_ON_OVERFLOW: expected one of block, drop, got 'explode'"
    )


def test_unknown_env_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, ""), env={"KERNO_AUDIT_FSYNK": "never"})
    assert str(info.value) == "KERNO_AUDIT_FSYNK: unknown audit key 'fsynk'"


def test_invalid_yaml_names_the_line(tmp_path: Path) -> None:
    path = write(tmp_path, "audit:\n  fsync: [batch\n")
    with pytest.raises(ConfigError) as info:
        load_config(path, env={})
    assert str(info.value).startswith(f"{path}:3: not valid YAML: ")


@pytest.mark.parametrize(
    ("text", "line", "key", "first"),
    [
        ("audit:\n  fsync: never\naudit:\n  fsync: always\n", 3, "audit", 1),
        ("audit:\n  fsync: always\n  queue_size: 8\n  fsync: never\n", 4, "audit.fsync", 2),
    ],
)
def test_a_key_given_twice_is_refused(
    tmp_path: Path, text: str, line: int, key: str, first: int
) -> None:
    # YAML keeps the last of two equal keys without a word: a second "audit:" section
    # replaced the first, and the operator's fsync: always became never.
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path, env={})
    assert str(info.value) == f"{path}:{line}: {key}: given twice (first on line {first})"


def test_a_merge_key_may_repeat_what_it_merges(tmp_path: Path) -> None:
    path = write(tmp_path, "audit:\n  <<: {fsync: always}\n  fsync: never\n")
    assert load_config(path, env={}).audit.fsync == "never"


def test_an_alias_bomb_is_refused_at_once(tmp_path: Path) -> None:
    # Nine lines of nested aliases stand for 9**9 values: the loader used to walk them all.
    rows = ["a0: &a0 [1, 1, 1, 1, 1, 1, 1, 1, 1]"]
    rows += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 9)]
    path = write(tmp_path, "\n".join(rows) + "\n")
    with pytest.raises(ConfigError) as info:
        load_config(path, env={})
    assert str(info.value) == (
        f"{path}: expands to more than 100000 values through YAML aliases (*name)"
    )


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("audit: !!python/object/apply:os.system [true]\n", "could not determine a constructor"),
        ("audit: " + "[" * 3000 + "]" * 3000 + "\n", "nested too deeply"),
    ],
)
def test_yaml_the_safe_loader_refuses_is_a_config_error(
    tmp_path: Path, text: str, why: str
) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path, env={})
    assert str(info.value).startswith(f"{path}")
    assert why in str(info.value)


def test_section_must_be_a_mapping(tmp_path: Path) -> None:
    path = write(tmp_path, "audit: 3\n")
    with pytest.raises(ConfigError) as info:
        load_config(path, env={})
    assert str(info.value) == f"{path}:1: audit: a section must be a mapping"


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path / "nope.yaml", env={})
    assert str(info.value) == f"{tmp_path / 'nope.yaml'}: no such config file"


def test_checkpoint_key_errors(tmp_path: Path) -> None:
    path = write(tmp_path, "audit:\n  checkpoint:\n    every_records: 0\n")
    with pytest.raises(ConfigError) as info:
        load_config(path, env={})
    assert str(info.value) == (
        f"{path}:3: audit.checkpoint.every_records: "
        "expected a whole number from 1 to 1000000000, got 0"
    )


def test_redaction_rules_from_config(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "audit:\n  redaction:\n    - kind: customer\n      pattern: 'cust-[0-9]+'\n",
    )
    rules = load_config(path, env={}).audit.redaction
    assert [(r.kind, r.pattern) for r in rules] == [("customer", "cust-[0-9]+")]


def test_bad_redaction_rule_names_the_line(tmp_path: Path) -> None:
    path = write(tmp_path, "audit:\n  redaction:\n    - kind: customer\n      pattern: '(['\n")
    with pytest.raises(ConfigError) as info:
        load_config(path, env={})
    message = str(info.value)
    assert message.startswith(f"{path}:3: audit.redaction[0]")


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("30s", 30.0), ("5m", 300.0), ("24h", 86400.0), ("500ms", 0.5), (12, 12.0), ("2d", 172800.0)],
)
def test_parse_duration(text: object, seconds: float) -> None:
    assert parse_duration(text) == seconds


def test_parse_duration_rejects() -> None:
    with pytest.raises(ValueError, match="expected a duration"):
        parse_duration("soon")


def test_other_sections_are_checked_and_defaulted(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "http:\n  listen: 127.0.0.1:0\n  bearer_token: s3cret\n"
        "doctor:\n  thresholds:\n    tcp_retransmit_pct: 5\n"
        "acme:\n  anything: [1, 2]\n",
    )
    # "acme" is the section of a plugin registered in process, not through an entry point.
    config = load_config(path, env={"KERNO_AI_PRIVACY_MODE": "redacted"}, plugin_sections={"acme"})
    assert config.section("http")["listen"] == "127.0.0.1:0"
    assert config.section("doctor")["thresholds"]["tcp_retransmit_pct"] == 5
    assert config.section("doctor")["thresholds"]["oom_memory_pct"] == 90.0
    assert config.section("ai")["privacy_mode"] == "redacted"
    assert config.section("acme") == {"anything": [1, 2]}
    assert config.section("bpf")["enabled"] is True
    flat = config.flat()
    assert flat["http.bearer_token"] == "***"
    assert flat["doctor.thresholds.tcp_retransmit_pct"] == 5


def test_section_errors_name_the_key(tmp_path: Path) -> None:
    path = write(tmp_path, "http:\n  enabled: yes please\n")
    with pytest.raises(ConfigError) as info:
        load_config(path, env={})
    assert str(info.value) == f"{path}:2: http.enabled: expected true or false"
    path = write(tmp_path, "otlp:\n  protocol: carrier-pigeon\n")
    with pytest.raises(ConfigError) as info:
        load_config(path, env={})
    assert str(info.value) == (
        f"{path}:2: otlp.protocol: expected one of grpc, http, got 'carrier-pigeon'"
    )
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, ""), env={"KERNO_HTTP_LISTN": "x"})
    assert str(info.value) == "KERNO_HTTP_LISTN: unknown http key 'listn'"


def test_diff_masks_secrets_and_marks_live_keys(tmp_path: Path) -> None:
    from kerno_otel.config import diff, is_live

    old = load_config(write(tmp_path, "http:\n  bearer_token: one\n"), env={})
    new = load_config(
        write(
            tmp_path,
            "http:\n  bearer_token: two\ndoctor:\n  interval: 10s\naudit:\n  max_size_mb: 5\n",
        ),
        env={},
    )
    assert diff(old, new) == [
        ("audit.max_size_mb", 100.0, 5.0),
        ("doctor.interval", "60s", "10s"),
        ("http.bearer_token", "***", "***"),
    ]
    assert [is_live(k) for k, _, _ in diff(old, new)] == [False, True, True]
