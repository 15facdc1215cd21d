"""The auth plugin's settings: TLS from the ``http`` section, its own ``auth`` section's values."""

from __future__ import annotations

import ssl
from collections.abc import Mapping
from typing import Any

from kerno_otel import ConfigError, parse_duration


def ssl_context(http: Mapping[str, Any]) -> ssl.SSLContext | None:
    cert, key, client_ca = (
        http.get("tls_cert_file"),
        http.get("tls_key_file"),
        http.get("client_ca_file"),
    )
    if not cert:
        if key or client_ca:
            which = "http.tls_key_file" if key else "http.client_ca_file"
            raise ConfigError(f"{which}: needs http.tls_cert_file")
        return None
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        ctx.load_cert_chain(str(cert), str(key) if key else None)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"http.tls_cert_file/tls_key_file: cannot load: {exc}") from None
    if client_ca:
        try:
            ctx.load_verify_locations(cafile=str(client_ca))
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(f"http.client_ca_file: cannot load: {exc}") from None
        ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


def duration(section: Mapping[str, Any], key: str, default: float) -> float:
    value = section.get(key)
    if value is None:
        return default
    try:
        seconds = parse_duration(value)
    except ValueError as exc:
        raise ConfigError(f"auth.{key}: {exc}") from None
    if seconds <= 0:
        raise ConfigError(f"auth.{key}: expected a duration > 0")
    return seconds


def whole(section: Mapping[str, Any], key: str, default: int) -> int:
    value = section.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"auth.{key}: expected a whole number >= 1")
    return value
