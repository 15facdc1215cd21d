"""The webhook sink plugin: findings as JSON POSTs (generic, Slack or PagerDuty Events v2).

Configured in its own section::

    doctor:
      sinks: [log, webhook]
    webhook:
      url: https://hooks.slack.com/services/...
      format: slack            # generic (default) | slack | pagerduty
      routing_key: ...         # pagerduty only (its integration key)
      timeout: 5s
      retries: 2               # extra attempts after a failed one

A payload is serialized once; the same bytes are hashed (``finding.emit``'s
``payload_hash``) and POSTed, on every retry. Connection errors, timeouts,
429 and 5xx are retried with a short backoff; other statuses are final.
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Callable, Mapping
from typing import Any, Final

import httpx

from kerno_otel import Config, ConfigError, SinkFactory, __version__, hookimpl, parse_duration
from kerno_otel.findings import Finding

#: Stable plugin name (the entry point's name), the sink's name and its config section.
NAME: Final = "webhook"
FORMATS: Final = ("generic", "slack", "pagerduty")
PAGERDUTY_URL: Final = "https://events.pagerduty.com/v2/enqueue"
_KEYS: Final = frozenset({"url", "format", "routing_key", "timeout", "retries", "headers"})
#: Seconds before the first retry; doubles each time.
BACKOFF_S: Final = 0.2


class DeliveryError(Exception):
    """The receiver did not accept the payload (the message is safe to log)."""


def _dumps(document: Mapping[str, Any]) -> bytes:
    return json.dumps(document, ensure_ascii=False, separators=(",", ":"), default=str).encode()


def _evidence_text(finding: Finding) -> str:
    return ", ".join(f"{k}={v}" for k, v in finding.evidence.items())


def generic_payload(finding: Finding, cycle_id: str, source: str) -> dict[str, Any]:
    return {
        "cycle_id": cycle_id,
        "rule": finding.rule,
        "severity": finding.severity,
        "title": finding.title,
        "evidence": dict(finding.evidence),
        "source": source,
        "sender": f"kerno-otel/{__version__}",
    }


def slack_payload(finding: Finding, cycle_id: str, source: str) -> dict[str, Any]:
    icon = ":red_circle:" if finding.severity == "CRITICAL" else ":warning:"
    text = f"{icon} [{finding.severity}] {finding.title} ({finding.rule} on {source})"
    blocks: list[dict[str, Any]] = [
        {"type": "section", "text": {"type": "mrkdwn", "text": text}},
    ]
    if finding.evidence:
        blocks.append(
            {"type": "section", "text": {"type": "mrkdwn", "text": _evidence_text(finding)}}
        )
    blocks.append(
        {"type": "context", "elements": [{"type": "mrkdwn", "text": f"kerno-otel {cycle_id}"}]}
    )
    return {"text": text, "blocks": blocks}


def pagerduty_payload(
    finding: Finding, cycle_id: str, source: str, routing_key: str
) -> dict[str, Any]:
    return {
        "routing_key": routing_key,
        "event_action": "trigger",
        "dedup_key": f"kerno-{source}-{finding.rule}",
        "payload": {
            "summary": f"[{finding.severity}] {finding.title}"[:1024],
            "severity": "critical" if finding.severity == "CRITICAL" else "warning",
            "source": source,
            "component": finding.rule,
            "class": "kerno-doctor",
            "custom_details": {"cycle_id": cycle_id, **dict(finding.evidence)},
        },
    }


class WebhookSink:
    """POSTs one finding per request; ``deliver`` raises :class:`DeliveryError` on failure."""

    def __init__(
        self,
        url: str,
        *,
        format: str = "generic",
        routing_key: str | None = None,
        timeout: float = 5.0,
        retries: int = 2,
        headers: Mapping[str, str] | None = None,
        source: str | None = None,
        backoff_s: float = BACKOFF_S,
    ) -> None:
        self.url = url
        self.format = format
        self.routing_key = routing_key
        self.timeout = timeout
        self.retries = retries
        self.headers = {"Content-Type": "application/json", **(headers or {})}
        self.source = source or socket.gethostname()
        self.backoff_s = backoff_s

    @classmethod
    def from_section(cls, section: Mapping[str, Any]) -> WebhookSink:
        """From the ``webhook`` config section; ConfigError names the bad key."""
        for key in section:
            if key not in _KEYS:
                known = ", ".join(sorted(_KEYS))
                raise ConfigError(f"{NAME}.{key}: unknown key (known: {known})")
        format = section.get("format", "generic")
        if format not in FORMATS:
            raise ConfigError(
                f"{NAME}.format: expected one of {', '.join(FORMATS)}, got {format!r}"
            )
        url = section.get("url") or (PAGERDUTY_URL if format == "pagerduty" else None)
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            raise ConfigError(f"{NAME}.url: expected an http(s) URL")
        routing_key = section.get("routing_key")
        if format == "pagerduty" and not routing_key:
            raise ConfigError(f"{NAME}.routing_key: required when format is pagerduty")
        try:
            timeout = parse_duration(section.get("timeout", "5s"))
        except ValueError as exc:
            raise ConfigError(f"{NAME}.timeout: {exc}") from None
        retries = section.get("retries", 2)
        if isinstance(retries, bool) or not isinstance(retries, int) or not 0 <= retries <= 10:
            raise ConfigError(f"{NAME}.retries: expected a whole number from 0 to 10")
        headers = section.get("headers") or {}
        if not isinstance(headers, Mapping):
            raise ConfigError(f"{NAME}.headers: expected a mapping")
        return cls(
            url,
            format=format,
            routing_key=str(routing_key) if routing_key else None,
            timeout=timeout,
            retries=retries,
            headers={str(k): str(v) for k, v in headers.items()},
        )

    def render(self, finding: Finding, cycle_id: str) -> bytes:
        if self.format == "slack":
            return _dumps(slack_payload(finding, cycle_id, self.source))
        if self.format == "pagerduty":
            return _dumps(pagerduty_payload(finding, cycle_id, self.source, self.routing_key or ""))
        return _dumps(generic_payload(finding, cycle_id, self.source))

    def deliver(self, payload: bytes) -> None:
        error = "not sent"
        with httpx.Client(timeout=self.timeout) as client:
            for attempt in range(self.retries + 1):
                if attempt:
                    time.sleep(self.backoff_s * 2 ** (attempt - 1))
                try:
                    response = client.post(self.url, content=payload, headers=self.headers)
                except httpx.HTTPError as exc:
                    # The class only: httpx messages may quote the URL (and its credentials).
                    error = type(exc).__name__
                    continue
                if response.is_success:
                    return
                error = f"HTTP {response.status_code}"
                if response.status_code != 429 and response.status_code < 500:
                    break
        tries = "attempt" if self.retries == 0 else "attempts"
        raise DeliveryError(f"{error} after {self.retries + 1} {tries}")


def _factory(config: Config) -> WebhookSink:
    return WebhookSink.from_section(config.section(NAME))


@hookimpl
def register_sinks(register: Callable[[str, SinkFactory], None]) -> None:
    register(NAME, _factory)


@hookimpl
def register_config_secrets(register: Callable[[str], None]) -> None:
    # The URL's path is the secret for Slack, the routing key for PagerDuty, and
    # headers carry tokens: none of them may appear in a config.reload record.
    for key in ("url", "routing_key", "headers"):
        register(key)
