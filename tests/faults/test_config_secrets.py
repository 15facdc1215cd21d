"""Config secrets never reach a ``config.reload`` record (issue 11, item 15).

A webhook's ``routing_key`` and a Slack URL's secret path used to be written in
clear in ``changes[].before/after``. Plugin keys declared secret, and plugin keys
named like one, are masked; the field is still listed, so a reviewer sees that it
changed.
"""

from __future__ import annotations

import signal
from pathlib import Path

import pytest
from test_daemon import Daemon, started, validate  # noqa: F401  (started is a fixture)

from kerno_otel.config import diff, load_config
from kerno_otel.config.secrets import named_like_secret

SLACK_OLD = "https://hooks.slack.com/services/T0AAAAAAA/B0BBBBBBB/oldSlackTokenXXXXXXXXXXXX"
SLACK_NEW = "https://hooks.slack.com/services/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Y"
ROUTING_OLD = "0123456789abcdef0123456789abcdef"
ROUTING_NEW = "fedcba9876543210fedcba9876543210"


def _config(tmp_path: Path, name: str, body: str) -> Path:
    path = tmp_path / name
    path.write_text(body)
    return path


def test_plugin_secrets_are_masked_in_the_diff(tmp_path: Path) -> None:
    old = load_config(
        _config(
            tmp_path,
            "old.yaml",
            f"webhook:\n  url: {SLACK_OLD}\n  routing_key: {ROUTING_OLD}\n  format: slack\n"
            "acme:\n  api_token: tok-old-111\n  max_tokens: 10\n  key_file: /etc/acme/k.pem\n"
            "  salt: salt-old\n  nested:\n    client_secret: cs-old\n",
        ),
        env={},
        plugin_sections={"acme"},
    )
    new = load_config(
        _config(
            tmp_path,
            "new.yaml",
            f"webhook:\n  url: {SLACK_NEW}\n  routing_key: {ROUTING_NEW}\n  format: slack\n"
            "acme:\n  api_token: tok-new-222\n  max_tokens: 20\n  key_file: /etc/acme/k2.pem\n"
            "  salt: salt-new\n  nested:\n    client_secret: cs-new\n",
        ),
        env={},
        plugin_sections={"acme"},
    )
    changes = diff(old, new, secrets={"acme.salt"})
    assert changes == [
        ("acme.api_token", "***", "***"),
        ("acme.key_file", "/etc/acme/k.pem", "/etc/acme/k2.pem"),
        ("acme.max_tokens", 10, 20),
        ("acme.nested.client_secret", "***", "***"),
        ("acme.salt", "***", "***"),  # declared by the plugin, not named like a secret
        ("webhook.routing_key", "***", "***"),
        ("webhook.url", "***", "***"),
    ]
    text = repr(changes)
    for secret in (SLACK_OLD, SLACK_NEW, ROUTING_OLD, ROUTING_NEW, "tok-", "cs-", "salt-"):
        assert secret not in text


def test_a_secret_set_or_unset_shows_only_that() -> None:
    old = load_config(None, env={})
    new = load_config(None, env={"KERNO_HTTP_BEARER_TOKEN": "b3arer-value"})
    assert diff(old, new) == [("http.bearer_token", None, "***")]
    assert diff(new, old) == [("http.bearer_token", "***", None)]


@pytest.mark.parametrize(
    ("name", "secret"),
    [
        ("routing_key", True),
        ("apiKey", True),
        ("X-Api-Token", True),
        ("password", True),
        ("db_passwd", True),
        ("webhook_url", True),
        ("headers", True),
        ("dsn", True),
        ("client_secret", True),
        ("max_tokens", False),
        ("key_file", False),
        ("ca_path", False),
        ("timeout", False),
        ("format", False),
    ],
)
def test_names_that_say_secret(name: str, secret: bool) -> None:
    assert named_like_secret(name) is secret


def test_sighup_reload_masks_webhook_secrets(tmp_path: Path, started: list[Daemon]) -> None:  # noqa: F811
    section = "webhook:\n  format: pagerduty\n  url: {url}\n  routing_key: {key}\n"
    daemon = Daemon(tmp_path, section.format(url=SLACK_OLD, key=ROUTING_OLD), "lifecycle,webhook")
    started.append(daemon)
    daemon.wait_for("daemon.start")
    daemon.config.write_text(
        f"audit:\n  file_path: {daemon.log}\n" + section.format(url=SLACK_NEW, key=ROUTING_NEW)
    )
    daemon.proc.send_signal(signal.SIGHUP)
    reload = daemon.wait_for("config.reload")[0]
    assert reload["outcome"] == "success"
    assert reload["details"]["changes"] == [
        {"field": "webhook.routing_key", "before": "***", "after": "***"},
        {"field": "webhook.url", "before": "***", "after": "***"},
    ]
    assert daemon.stop() == 0
    text = "".join(path.read_text() for path in daemon.log.parent.glob("kerno-audit*.jsonl"))
    for secret in (ROUTING_OLD, ROUTING_NEW, "oldSlackToken", "newSlackToken"):
        assert secret not in text
    validate(daemon.log)
