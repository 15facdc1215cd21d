"""The forwarder's settings: the ``otlp`` section resolved, which endpoint wins, SDK logging.

Which endpoint the forwarder sends to, first match wins (issue 13: an explicit
config value used to give way to the environment, and an explicit value equal
to the default to the SDK's ``localhost``):

1. ``otlp.endpoint`` from the config file or ``KERNO_OTLP_ENDPOINT``, used as given;
2. ``OTEL_EXPORTER_OTLP_LOGS_ENDPOINT``, then ``OTEL_EXPORTER_OTLP_ENDPOINT``, read by
   the official exporter as the OpenTelemetry specification says (the HTTP exporter
   appends ``/v1/logs`` to the second);
3. ``http://127.0.0.1:4317`` (gRPC) or ``http://127.0.0.1:4318/v1/logs`` (HTTP):
   loopback IPv4, never the SDK's ``localhost`` (which tries ``[::1]`` first).

The daemon prints the endpoint in force and where it came from when the forwarder
starts (:meth:`ForwarderOptions.describe`).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final, TextIO
from urllib.parse import urlsplit, urlunsplit

from kerno_otel.config import SECTION_DEFAULTS, parse_duration

BACKOFF_CAP_S: Final = 30.0
_DEFAULT_TIMEOUT: Final = SECTION_DEFAULTS["otlp"]["timeout"]
#: The endpoint when neither the config nor the environment names one, by protocol.
DEFAULT_ENDPOINTS: Final = {
    "grpc": "http://127.0.0.1:4317",
    "http": "http://127.0.0.1:4318/v1/logs",
}
#: The standard variables, in the order they are looked at.
ENDPOINT_VARIABLES: Final = ("OTEL_EXPORTER_OTLP_LOGS_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT")


@dataclass(frozen=True)
class ForwarderOptions:
    """The ``otlp`` section, resolved. None means: the exporter's default or its
    ``OTEL_EXPORTER_OTLP_*`` variable."""

    endpoint: str | None = None
    protocol: str = "grpc"
    headers: Mapping[str, str] = field(default_factory=dict)
    timeout: float | None = None
    compression: str | None = None
    certificate_file: str | None = None
    client_key_file: str | None = None
    client_certificate_file: str | None = None
    batch_size: int = 512
    #: How often an idle forwarder looks for new lines.
    poll_interval: float = 0.05
    #: While sends fail: the lag that raises the stderr alarm, and how often it may repeat.
    alarm_lag_seconds: float = 60.0
    alarm_every_seconds: float = 60.0
    backoff_initial: float = 0.5
    backoff_cap: float = BACKOFF_CAP_S
    #: Where ``endpoint`` came from: ``otlp.endpoint``, a variable's name, or ``default``.
    endpoint_origin: str = "otlp.endpoint"

    @classmethod
    def from_section(
        cls,
        section: Mapping[str, Any],
        env: Mapping[str, str] | None = None,
        **overrides: Any,
    ) -> ForwarderOptions:
        """From the ``otlp`` config section and ``env`` (default ``os.environ``); see the
        module docstring for which endpoint wins. The embedded default ``timeout`` steps
        aside for ``OTEL_EXPORTER_OTLP_TIMEOUT``, which the exporters read."""
        env = os.environ if env is None else env
        protocol = section.get("protocol") or "grpc"
        endpoint, origin = resolve_endpoint(section.get("endpoint"), protocol, env)
        timeout = section.get("timeout")
        values: dict[str, Any] = {
            "endpoint": endpoint,
            "endpoint_origin": origin,
            "protocol": protocol,
            "headers": dict(section.get("headers") or {}),
            "timeout": (None if timeout in (None, _DEFAULT_TIMEOUT) else parse_duration(timeout)),
            "compression": section.get("compression"),
            "certificate_file": section.get("certificate_file"),
            "client_key_file": section.get("client_key_file"),
            "client_certificate_file": section.get("client_certificate_file"),
            "batch_size": int(section.get("batch_size") or 512),
        }
        values.update(overrides)
        return cls(**values)

    def describe(self, env: Mapping[str, str] | None = None) -> str:
        """``<endpoint> over <protocol> (from <origin>)``, without any user:password part."""
        env = os.environ if env is None else env
        shown = self.endpoint if self.endpoint is not None else env.get(self.endpoint_origin, "")
        return f"{_without_userinfo(shown)} over {self.protocol} (from {self.endpoint_origin})"


def resolve_endpoint(
    configured: Any, protocol: str, env: Mapping[str, str]
) -> tuple[str | None, str]:
    """(the endpoint to hand the exporter, where it came from).

    None hands the choice to the exporter, which reads the variable named by the origin.
    """
    if configured not in (None, ""):
        return str(configured), "otlp.endpoint"
    for name in ENDPOINT_VARIABLES:
        if env.get(name):
            return None, name
    return DEFAULT_ENDPOINTS.get(protocol, DEFAULT_ENDPOINTS["grpc"]), "default"


def _without_userinfo(url: str) -> str:
    try:
        parts = urlsplit(url)
    except ValueError:
        return "(unparsable endpoint)"
    if parts.username is None and parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = host if parts.port is None else f"{host}:{parts.port}"
    return urlunsplit(parts._replace(netloc=netloc))


#: Threads whose SDK log lines are dropped: forwarder threads being stopped, whose
#: export the shutdown cancels on purpose ("Channel closed!" is no news then).
_QUIET: set[int] = set()


def quiet(ident: int | None, on: bool) -> None:
    """Drop (``on``) or stop dropping the SDK's log lines from thread ``ident``."""
    if ident is not None:
        (_QUIET.add if on else _QUIET.discard)(ident)


class _PrefixedStderr(logging.Handler):
    """The OpenTelemetry SDK's log lines as ``kerno-otel: otlp: <message>`` on our stderr."""

    def __init__(self, stream: TextIO) -> None:
        super().__init__(logging.WARNING)
        self.stream = stream

    def emit(self, record: logging.LogRecord) -> None:
        if record.thread in _QUIET:
            return
        try:
            text = record.getMessage().splitlines()[0] if record.getMessage() else ""
            self.stream.write(f"kerno-otel: otlp: {record.levelname.lower()}: {text}\n")
            self.stream.flush()
        except Exception:  # a log line must never raise into the exporter's thread
            pass


def route_sdk_logging(stream: TextIO) -> None:
    """Send the ``opentelemetry`` loggers' lines to ``stream``, prefixed, and nowhere else.

    Without this the exporters' warnings ("Transient error ... retrying in 1s") reach
    stderr raw through Python's last-resort handler, unprefixed (issue 13). Replaces
    the handler a previous call installed, so calling it again is safe.
    """
    logger = logging.getLogger("opentelemetry")
    for handler in [h for h in logger.handlers if isinstance(h, _PrefixedStderr)]:
        logger.removeHandler(handler)
    logger.addHandler(_PrefixedStderr(stream))
    logger.propagate = False
    if logger.level == logging.NOTSET:
        logger.setLevel(logging.WARNING)
