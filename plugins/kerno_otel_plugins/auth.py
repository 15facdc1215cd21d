"""The auth plugin: the daemon's HTTP server, its bearer token / mTLS checks, and ``auth.failure``.

Served routes: ``/metrics`` (Prometheus text 0.0.4: every instrument on the
daemon's meter, rendered by the OpenTelemetry Prometheus reader; see
docs/telemetry.md), ``/healthz`` and ``/readyz`` (never behind auth, so
probes work), and every :class:`kerno_otel.hookspecs.Route` the daemon collected
from ``register_http_routes`` into ``context.routes``. Anything else is 404,
after auth, so the route table is not revealed to strangers.

Config (``http`` section): ``enabled``, ``listen`` (``host:port``,
port 0 = ephemeral; the bound address goes to ``context.http_address``),
``bearer_token`` or ``bearer_token_file`` (the file wins when both are set, and is
re-read on every successful reload), ``tls_cert_file`` + ``tls_key_file`` (TLS),
``client_ca_file`` (mTLS: a client certificate from that CA is required). The
plugin's own ``auth`` section tunes it: ``failure_interval`` (flood-control
interval, default ``60s``), ``max_sources`` (10000), ``max_connections``
(256 served at once, a thread each; past that the one waiting longest for its request
head is cut to make room), ``timeout`` (per socket operation,
``5s``; a request must be whole within three times that).

Each request is a ``SERVER`` span (``{method} {route}``) with the auth
outcome (``kerno.auth.outcome``: ``public``, ``authorized`` or the refusal
reason); never the client's address. A listen address that cannot be bound
(the port is taken) stops the daemon with one clear line on stderr and a
non-zero exit, as node_exporter does: a daemon without its endpoint is not
running as configured.

Security choices:

- Tokens are compared with :func:`hmac.compare_digest` over SHA-256 digests of
  the bytes, so neither the content nor the length of the token leaks by timing.
- No token configured: ``/metrics`` and authenticated plugin routes are open
  only when the server listens on a loopback address, or when mTLS is on (a
  verified client certificate is then the credential; with a token as well,
  both are required). Listening elsewhere
  without either, they refuse every request (401, audited) — fail closed,
  instead of publishing the pipeline's state to the network by a config slip;
  health probes keep working. Start-up says which case applies on stderr.
- A configured token file that cannot be read (or is empty) also fails closed:
  nothing authenticates until a reload reads a good one.
- Every refusal becomes an ``auth.failure`` record, folded per source and
  interval by :class:`~kerno_otel_plugins._auth_limiter.FailureLimiter`; a failed
  mTLS handshake is recorded with endpoint ``(tls handshake)``, since no request
  was read. A plain TLS handshake failure (no client CA configured) refuses
  nobody's credentials and is not recorded.
"""

from __future__ import annotations

import hashlib
import hmac
import ssl
import sys
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from opentelemetry.trace import SpanKind, StatusCode

from kerno_otel import Config, ConfigError, hookimpl
from kerno_otel.hookspecs import ConfigDiff, DaemonContext, Route
from kerno_otel_plugins import _http_metrics
from kerno_otel_plugins._auth_limiter import FailureLimiter
from kerno_otel_plugins._auth_settings import duration, ssl_context, whole
from kerno_otel_plugins._http import (
    HttpServer,
    Request,
    Response,
    is_loopback,
    parse_listen,
)

#: What ``/metrics`` answers with (Prometheus text exposition 0.0.4).
PROMETHEUS_CONTENT_TYPE: Final = "text/plain; version=0.0.4; charset=utf-8"
#: Stable plugin name (the entry point's name): the running server is ``context.state[NAME]``.
NAME: Final = "auth"
#: Endpoint of a refused mTLS handshake: no request line was read.
HANDSHAKE_ENDPOINT: Final = "(tls handshake)"
_TEXT: Final = "text/plain; charset=utf-8"
_PUBLIC: Final = ("/healthz", "/readyz")


@dataclass(frozen=True)
class Credential:
    """The bearer token in force: ``configured`` with ``digest`` None means fail closed."""

    configured: bool
    digest: bytes | None = None
    error: str | None = None


def load_credential(http: Mapping[str, Any]) -> Credential:
    """The token from ``bearer_token_file`` (re-read every call) or ``bearer_token``."""
    token_file = http.get("bearer_token_file")
    if token_file:
        try:
            text = Path(str(token_file)).read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            return Credential(True, None, f"http.bearer_token_file: cannot read: {reason}")
        if not text:
            return Credential(True, None, "http.bearer_token_file: the file is empty")
        return Credential(True, _digest(text.encode("utf-8")))
    token = http.get("bearer_token")
    if token:
        return Credential(True, _digest(str(token).encode("utf-8")))
    return Credential(False)


def _digest(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


class AuthServer:
    """The HTTP server with its auth policy, routes and flood control, for one daemon."""

    def __init__(self, context: DaemonContext) -> None:
        self.context = context
        http = context.section("http")
        own = context.section("auth")
        self.started = time.monotonic()
        self.credential = load_credential(http)
        interval = duration(own, "failure_interval", 60.0)
        max_sources = whole(own, "max_sources", 10_000)
        max_connections = whole(own, "max_connections", 256)
        if "workers" in own:
            _say(
                "auth.workers: no longer used: each connection has a thread of its own, "
                "up to auth.max_connections"
            )
        timeout = duration(own, "timeout", 5.0)
        try:
            host, port = parse_listen(str(http.get("listen", "127.0.0.1:9090")))
        except ValueError as exc:
            raise ConfigError(f"http.listen: {exc}") from None
        self.mtls = bool(http.get("client_ca_file"))
        tls = ssl_context(http)
        self.routes = _collect_routes(context.routes)
        self.limiter = FailureLimiter(
            self._emit_failure, interval=interval, max_sources=max_sources
        )
        try:
            self.server = HttpServer(
                host,
                port,
                self,
                ssl_context=tls,
                on_handshake_failure=self._handshake_failed if self.mtls else None,
                max_connections=max_connections,
                timeout=timeout,
                request_deadline=3 * timeout,
            )
        except OSError as exc:
            raise OSError(
                exc.errno, f"http.listen: cannot listen on {http.get('listen')}: {exc.strerror}"
            ) from None
        self.loopback = is_loopback(self.server.host)
        _http_metrics.register(context.meter, self.limiter, self.server, self.started)

    @property
    def address(self) -> str:
        return self.server.address

    def start(self) -> None:
        self.limiter.start()
        self.server.start()

    def stop(self) -> None:
        """Stop serving, then write every pending fold (no refusal is lost). Safe twice."""
        self.server.stop()
        self.limiter.stop()

    def reload(self) -> None:
        self.credential = load_credential(self.context.section("http"))
        if self.credential.error:
            _say(f"{self.credential.error}; refusing authenticated routes")

    def describe(self) -> list[str]:
        """The start-up lines for stderr: where it listens and who gets in."""
        lines = [f"http listening on {self.address}"]
        if self.server_tls:
            lines.append(
                "http: TLS on; client certificates required (mTLS)" if self.mtls else "http: TLS on"
            )
        cred = self.credential
        if cred.error:
            lines.append(f"{cred.error}; refusing authenticated routes")
        elif not cred.configured:
            if self.mtls:
                lines.append("http: no bearer token configured: clients are authenticated by mTLS")
            elif self.loopback:
                lines.append(
                    "http: no bearer token configured: /metrics is open to local callers "
                    "(listening on loopback only)"
                )
            else:
                lines.append(
                    f"http: no bearer token configured and {self.address} is not loopback: "
                    "/metrics and plugin routes refuse every request until "
                    "http.bearer_token or http.bearer_token_file is set"
                )
        return lines

    @property
    def server_tls(self) -> bool:
        return self.server._ssl is not None

    # --- requests (called on server threads) -------------------------------------------------

    def __call__(self, request: Request) -> Response:
        known = request.path in self.routes or request.path in (*_PUBLIC, "/metrics")
        # The route names the span when it is one of ours; anything else is just the method.
        route = request.path if known else None
        with self.context.tracer.start_as_current_span(
            f"{request.method} {route}" if route else request.method,
            kind=SpanKind.SERVER,
            attributes={"http.request.method": request.method, "http.route": route or ""},
        ) as span:
            outcome: list[str] = []
            response = self._answer(request, outcome)
            span.set_attribute("http.response.status_code", response.status)
            span.set_attribute("kerno.auth.outcome", outcome[0] if outcome else "public")
            if response.status >= 500:
                span.set_status(StatusCode.ERROR)
            return response

    def _answer(self, request: Request, outcome: list[str]) -> Response:
        path = request.path
        route = self.routes.get(path)
        public = path in _PUBLIC or (route is not None and not route.authenticated)
        if not public:
            reason = self.refusal(request)
            outcome.append(reason or "authorized")
            if reason is not None:
                self.limiter.refuse(request.remote_ip, reason, path)
                return Response(
                    401,
                    _TEXT,
                    b"unauthorized\n",
                    (("WWW-Authenticate", 'Bearer realm="kerno-otel"'),),
                )
        if request.method not in ("GET", "HEAD") and (path in _PUBLIC or path == "/metrics"):
            return Response(405, _TEXT, b"method not allowed\n", (("Allow", "GET, HEAD"),))
        if path == "/healthz":
            return Response(200, _TEXT, b"ok\n")
        if path == "/readyz":
            if _audit_open(self.context.audit):
                return Response(200, _TEXT, b"ready\n")
            return Response(503, _TEXT, b"audit log closed\n")
        if path == "/metrics":
            text = self.context.telemetry.prometheus_text()
            if text is None:
                return Response(503, _TEXT, b"no metrics reader on this daemon\n")
            return Response(200, PROMETHEUS_CONTENT_TYPE, text)
        if route is not None:
            status, content_type, body = route.handler(request.target)
            return Response(status, content_type, body)
        return Response(404, _TEXT, b"not found\n")

    def refusal(self, request: Request) -> str | None:
        """Why ``request`` is refused (``token_missing``/``token_mismatch``), or None."""
        cred = self.credential
        if not cred.configured and (self.loopback or self.mtls):
            return None
        values = request.headers.get_all("Authorization") or []
        if not values:
            return "token_missing"
        scheme, _, presented = str(values[0]).strip().partition(" ")
        if len(values) != 1 or scheme.lower() != "bearer" or cred.digest is None:
            return "token_mismatch"
        # Header values arrive decoded as latin-1; that gives back the bytes sent.
        sent = presented.strip().encode("latin-1", errors="replace")
        if hmac.compare_digest(_digest(sent), cred.digest):
            return None
        return "token_mismatch"

    def _handshake_failed(self, remote_ip: str, error: ssl.SSLError) -> None:
        self.limiter.refuse(remote_ip, "mtls_failure", HANDSHAKE_ENDPOINT)

    def _emit_failure(self, endpoint: str, reason: str, remote_ip: str, suppressed: int) -> None:
        # remote_ip is the raw peer address: the redactor replaces it by the
        # auth.failure policy before anything is written, so the log never holds it.
        self.context.audit.emit(
            "auth.failure",
            details={
                "endpoint": endpoint,
                "reason": reason,
                "remote_ip": remote_ip,
                "suppressed": suppressed,
            },
            outcome="failure",
        )


# --- hooks -----------------------------------------------------------------------------------


@hookimpl
def daemon_startup(context: DaemonContext) -> None:
    """Start the HTTP server when ``http.enabled``; publish its address in ``http_address``."""
    if not context.section("http").get("enabled", True):
        return
    try:
        server = AuthServer(context)
    except OSError as exc:
        # Config, not PII: the operator's own listen address is said as configured.
        _say(f"Error: {exc.strerror}; stopping")
        context.request_stop("error")
        return
    server.start()
    context.state[NAME] = server
    context.http_address = server.address
    for line in server.describe():
        _say(line)


@hookimpl
def daemon_shutdown(context: DaemonContext, reason: str, uptime_s: float) -> None:
    """Stop the server, write pending folded refusals, join the threads."""
    server = context.state.pop(NAME, None)
    if isinstance(server, AuthServer):
        server.stop()


@hookimpl
def daemon_panic(context: DaemonContext, exception_type: str, panic_digest: str) -> None:
    """daemon_shutdown is not called after a panic: still write the pending refusals."""
    daemon_shutdown(context, "error", 0.0)


@hookimpl
def config_reload(
    context: DaemonContext,
    old: Config,
    new: Config | None,
    diff: ConfigDiff | None,
    source: str,
    path: str,
    uid: int,
    error: str | None,
) -> None:
    """On a successful reload, read the bearer token again (the token file every time)."""
    if error is not None or new is None:
        return
    server = context.state.get(NAME)
    if isinstance(server, AuthServer):
        server.reload()


# --- helpers ---------------------------------------------------------------------------------


def _collect_routes(routes: Iterable[Route]) -> dict[str, Route]:
    table: dict[str, Route] = {}
    for route in routes:
        if not isinstance(route, Route):
            _say(f"http: ignoring {route!r}: not a kerno_otel.hookspecs.Route")
        elif route.path in (*_PUBLIC, "/metrics"):
            _say(f"http: ignoring plugin route {route.path}: built in")
        elif route.path in table:
            _say(f"http: ignoring duplicate route {route.path}: the first one registered wins")
        else:
            table[route.path] = route
    return table


def _audit_open(audit: Any) -> bool:
    return not audit.closed


def _say(line: str) -> None:
    print(f"kerno-otel: {line}", file=sys.stderr)


__all__ = [
    "AuthServer",
    "Credential",
    "config_reload",
    "daemon_panic",
    "daemon_shutdown",
    "daemon_startup",
    "load_credential",
]
