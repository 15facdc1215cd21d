"""The auth plugin: a real HTTP(S) server on loopback, real TLS, a real audit log read back."""

from __future__ import annotations

import datetime
import http.client
import ipaddress
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from kerno_otel_plugins import auth
from kerno_otel_plugins._auth_limiter import OVERFLOW_IP, FailureLimiter

from kerno_otel.audit.log import AuditLog
from kerno_otel.config import AuditConfig, Config, load_config
from kerno_otel.hookspecs import ConfigDiff, DaemonContext, Route
from kerno_otel.records.schema import SchemaSet
from kerno_otel.records.validate import RecordValidator
from kerno_otel.telemetry import build_telemetry, read_settings

REPO = Path(__file__).resolve().parent.parent

TOKEN = "s3cret-token-0123456789"


@dataclass
class Daemon:
    context: DaemonContext
    log_path: Path
    host: str
    port: int

    def request(
        self,
        path: str,
        token: str | None = None,
        *,
        tls: ssl.SSLContext | None = None,
        method: str = "GET",
    ) -> tuple[int, str, bytes]:
        conn: http.client.HTTPConnection
        if tls is not None:
            conn = http.client.HTTPSConnection(self.host, self.port, context=tls, timeout=5)
        else:
            conn = http.client.HTTPConnection(self.host, self.port, timeout=5)
        try:
            headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
            conn.request(method, path, headers=headers)
            response = conn.getresponse()
            return response.status, response.getheader("Content-Type", ""), response.read()
        finally:
            conn.close()

    def stop(self) -> list[dict[str, Any]]:
        """Shut the plugin down, close the log, and return every record (all checked valid)."""
        auth.daemon_shutdown(self.context, "request", 1.0)
        self.context.audit.close()
        return read_valid(self.log_path)


def read_valid(path: Path) -> list[dict[str, Any]]:
    validator = RecordValidator(SchemaSet.builtin())
    records = [orjson.loads(line) for line in path.read_bytes().splitlines()]
    for record in records:
        assert validator.check(record) is None, record
    return records


def failures(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r["details"] for r in records if r["type"] == "auth.failure"]


def write_config(path: Path, http: dict[str, Any], own: dict[str, Any] | None = None) -> Config:
    import yaml

    data: dict[str, Any] = {"http": {"listen": "127.0.0.1:0", **http}}
    if own:
        data["auth"] = own
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return load_config(path, env={})


@pytest.fixture
def start(tmp_path: Path) -> Iterator[Any]:
    started: list[Daemon] = []
    stopped: list[str] = []

    def _start(
        http: dict[str, Any], own: dict[str, Any] | None = None, routes: list[Route] | None = None
    ) -> Daemon:
        config = write_config(tmp_path / "kerno.yaml", http, own)
        log_path = tmp_path / "audit" / "kerno-audit.jsonl"
        audit = AuditLog(AuditConfig(file_path=str(log_path)))
        # The daemon's own telemetry (no exporters): /metrics reads its instruments.
        telemetry = build_telemetry(
            read_settings({}, {}),
            resource=audit.resource,
            scrub=lambda text: audit.redactor.redact_text(text)[0],
            serve_metrics=True,
            stats=audit.stats,
        )
        context = DaemonContext(
            audit=audit,
            config=config,
            request_stop=stopped.append,
            routes=routes or (),
            telemetry=telemetry,
        )
        auth.daemon_startup(context)
        assert context.http_address is not None
        host, _, port = context.http_address.rpartition(":")
        daemon = Daemon(context, log_path, host, int(port))
        started.append(daemon)
        return daemon

    yield _start
    for daemon in started:  # a failed test still stops its threads
        auth.daemon_shutdown(daemon.context, "request", 0.0)
        daemon.context.audit.close()


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a /metrics answer, parsed by prometheus_client's own parser,
    by (name, labels without the OpenTelemetry scope labels)."""
    from prometheus_client.parser import text_string_to_metric_families

    out: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = tuple(
                sorted((k, v) for k, v in sample.labels.items() if not k.startswith("otel_scope"))
            )
            out[(sample.name, labels)] = sample.value
    return out


def metric(text: str, name: str, **labels: str) -> float:
    found = samples(text).get((name, tuple(sorted(labels.items()))))
    if found is None:
        raise AssertionError(f"{name}{labels} not in metrics: {text}")
    return found


# --- bearer token ----------------------------------------------------------------------------


def test_token_required_and_refusals_audited(
    start: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    daemon = start({"bearer_token": TOKEN})
    address = daemon.context.http_address
    assert f"kerno-otel: http listening on {address}\n" in capsys.readouterr().err

    assert daemon.request("/metrics")[0] == 401
    assert daemon.request("/metrics", "wrong-token-value")[0] == 401
    assert daemon.request("/healthz") == (200, "text/plain; charset=utf-8", b"ok\n")
    assert daemon.request("/readyz")[0] == 200
    assert daemon.request("/nope", TOKEN)[0] == 404
    assert daemon.request("/nope?x=1")[0] == 401  # auth before 404; folded (same ip, reason)

    assert daemon.context.audit.flush()
    written = daemon.context.audit.stats()["records_written"]
    assert written == len(daemon.log_path.read_bytes().splitlines())
    status, content_type, body = daemon.request("/metrics", TOKEN)
    assert (status, content_type) == (200, "text/plain; version=0.0.4; charset=utf-8")
    text = body.decode()
    assert metric(text, "kerno_audit_records_written_total") == written
    assert "# TYPE kerno_audit_records_written_total counter\n" in text
    assert "# HELP kerno_audit_fsync_time_seconds_total " in text
    failed = "kerno_http_auth_failures_total"
    assert metric(text, failed, kerno_auth_reason="token_missing") == 2
    assert metric(text, failed, kerno_auth_reason="token_mismatch") == 1
    assert metric(text, failed, kerno_auth_reason="mtls_failure") == 0
    assert metric(text, "kerno_http_auth_failures_pending") == 1
    assert metric(text, "process_uptime_seconds") >= 0

    records = daemon.stop()
    ip = "[REDACTED:ip]"
    assert failures(records) == [
        {"endpoint": "/metrics", "reason": "token_missing", "remote_ip": ip, "suppressed": 0},
        {"endpoint": "/metrics", "reason": "token_mismatch", "remote_ip": ip, "suppressed": 0},
        # Folded at shutdown: the endpoint of the window's first refusal.
        {"endpoint": "/metrics", "reason": "token_missing", "remote_ip": ip, "suppressed": 0},
    ]
    assert all(r["outcome"] == "failure" and r["actor"] == "http/server" for r in records[1:])
    raw = daemon.log_path.read_bytes()
    assert b"127.0.0.1" not in raw
    assert TOKEN.encode() not in raw


def test_ten_thousand_bad_requests_fold_into_few_records(start: Any) -> None:
    daemon = start({"bearer_token": TOKEN}, {"failure_interval": "1s"})
    threads, per_thread = 4, 2_500
    statuses: list[int] = []
    lock = threading.Lock()

    def flood(worker: int) -> None:
        # One keep-alive connection per thread; half send no token, half a wrong one.
        conn = http.client.HTTPConnection(daemon.host, daemon.port, timeout=10)
        seen: list[int] = []
        for i in range(per_thread):
            headers = {"Authorization": "Bearer nope-nope-nope"} if i % 2 else {}
            conn.request("GET", f"/metrics?i={i}", headers=headers)
            response = conn.getresponse()
            response.read()
            seen.append(response.status)
        conn.close()
        with lock:
            statuses.extend(seen)

    began = time.monotonic()
    pool = [threading.Thread(target=flood, args=(n,)) for n in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join(60)
    elapsed = time.monotonic() - began
    total = threads * per_thread
    assert statuses == [401] * total

    text = daemon.request("/metrics", TOKEN)[2].decode()
    failed = "kerno_http_auth_failures_total"
    assert metric(text, failed, kerno_auth_reason="token_missing") == 5000
    assert metric(text, failed, kerno_auth_reason="token_mismatch") == 5000

    found = failures(daemon.stop())
    # every record stands for itself plus the refusals folded into it
    assert sum(1 + d["suppressed"] for d in found) == total
    # At most two records per (ip, reason) per interval: the first refusal, then the fold.
    intervals = int(elapsed) + 2
    assert len(found) <= 2 * 2 * intervals
    assert len(found) <= 200
    assert {d["reason"] for d in found} == {"token_missing", "token_mismatch"}
    assert {d["endpoint"] for d in found} == {"/metrics"}  # query stripped


def test_token_file_is_reread_on_reload(
    start: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("first-token-aaaaaaaa\n", encoding="utf-8")
    daemon = start({"bearer_token_file": str(token_file)})
    assert daemon.request("/metrics", "first-token-aaaaaaaa")[0] == 200

    def reload(error: str | None) -> None:
        old = daemon.context.config
        new = None if error else load_config(tmp_path / "kerno.yaml", env={})
        if new is not None:
            daemon.context.config = new
        diff = None if error else ConfigDiff((), (), (), ())
        auth.config_reload(daemon.context, old, new, diff, "SIGHUP", "/etc", 0, error)

    token_file.write_text("second-token-bbbbbbb\n", encoding="utf-8")
    reload(None)
    assert daemon.request("/metrics", "first-token-aaaaaaaa")[0] == 401
    assert daemon.request("/metrics", "second-token-bbbbbbb")[0] == 200

    # A failed reload changes nothing, not even the token.
    token_file.write_text("third-token-ccccccc\n", encoding="utf-8")
    reload("bad config")
    assert daemon.request("/metrics", "second-token-bbbbbbb")[0] == 200

    # An unreadable token file fails closed.
    token_file.unlink()
    reload(None)
    assert capsys.readouterr().err.endswith(
        "kerno-otel: http.bearer_token_file: cannot read: No such file or directory;"
        " refusing authenticated routes\n"
    )
    assert daemon.request("/metrics", "second-token-bbbbbbb")[0] == 401
    found = [(d["reason"], d["suppressed"]) for d in failures(daemon.stop())]
    assert found == [("token_mismatch", 0), ("token_mismatch", 0)]  # the second one folded


def test_no_token_open_on_loopback_only(start: Any, capsys: pytest.CaptureFixture[str]) -> None:
    daemon = start({})
    assert "open to local callers (listening on loopback only)" in capsys.readouterr().err
    assert daemon.request("/metrics")[0] == 200
    # The same server as if it listened beyond loopback: it fails closed.
    daemon.context.state[auth.NAME].loopback = False
    assert daemon.request("/metrics")[0] == 401
    assert daemon.request("/healthz")[0] == 200
    assert [d["reason"] for d in failures(daemon.stop())] == ["token_missing"]


def test_plugin_routes(start: Any) -> None:
    seen: list[str] = []

    def hello(target: str) -> tuple[int, str, bytes]:
        seen.append(target)
        return 200, "application/json", b'{"hello":1}'

    def broken(target: str) -> tuple[int, str, bytes]:
        raise RuntimeError("boom")

    routes = [
        Route("/hello", hello),
        Route("/public", lambda target: (200, "text/plain", b"pub"), authenticated=False),
        Route("/broken", broken),
        Route("/metrics", hello),  # a built-in: ignored
    ]
    daemon = start({"bearer_token": TOKEN}, routes=routes)
    assert daemon.request("/public") == (200, "text/plain", b"pub")
    assert daemon.request("/hello")[0] == 401
    assert daemon.request("/hello?a=b", TOKEN) == (200, "application/json", b'{"hello":1}')
    assert seen == ["/hello?a=b"]
    assert daemon.request("/broken", TOKEN)[0] == 500
    assert daemon.request("/metrics", TOKEN)[1].startswith("text/plain; version=0.0.4")
    assert daemon.request("/metrics", TOKEN, method="POST")[0] == 405
    assert daemon.request("/metrics", TOKEN, method="HEAD")[::2] == (200, b"")
    assert failures(daemon.stop())[0]["endpoint"] == "/hello"


def test_a_silent_client_does_not_pin_the_server(start: Any) -> None:
    daemon = start({"bearer_token": TOKEN}, {"timeout": "300ms"})
    silent = socket.create_connection((daemon.host, daemon.port))
    try:
        began = time.monotonic()
        assert daemon.request("/healthz")[0] == 200
        assert time.monotonic() - began < 3
        assert silent.recv(1) == b""  # the server closed the silent connection
    finally:
        silent.close()
    assert failures(daemon.stop()) == []


def test_a_trickling_client_is_cut_at_the_request_deadline(start: Any) -> None:
    # timeout 300 ms per read, so the request deadline is 900 ms; one byte every
    # 100 ms never trips the read timeout, only the deadline.
    daemon = start({"bearer_token": TOKEN}, {"timeout": "300ms"})
    slow = socket.create_connection((daemon.host, daemon.port))
    cut = threading.Event()
    sending = threading.Event()

    def trickle() -> None:
        try:
            for byte in b"GET /metrics HTTP/1.1\r\nX-Slow: " + b"a" * 1000:
                slow.send(bytes([byte]))
                sending.set()
                time.sleep(0.1)  # the slow client is the thing under test
        except OSError:
            cut.set()

    thread = threading.Thread(target=trickle)
    thread.start()
    try:
        assert sending.wait(5)  # the slow client is connected and sending
        began = time.monotonic()
        assert daemon.request("/healthz")[0] == 200
        assert time.monotonic() - began < 3
        assert slow.recv(1) == b""
        thread.join(5)
        assert cut.is_set() or not thread.is_alive()
    finally:
        slow.close()
        thread.join(5)
    assert failures(daemon.stop()) == []


def test_slow_clients_do_not_block_authorized_scrapes(start: Any) -> None:
    # Issue 11, item 16: 8 clients (one per worker of the old fixed pool) sending half a
    # request line held every worker, so an authorized scrape waited until the reaper
    # cut them. With a 30 s timeout the reaper waits 90 s; the scrape gets 10 s.
    daemon = start({"bearer_token": TOKEN}, {"timeout": "30s"})
    slow = [socket.create_connection((daemon.host, daemon.port)) for _ in range(16)]
    try:
        for conn in slow:
            conn.sendall(b"GET /metr")
        conn = http.client.HTTPConnection(daemon.host, daemon.port, timeout=10)
        conn.request("GET", "/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
        response = conn.getresponse()
        assert response.status == 200
        assert metric(response.read().decode(), "kerno_audit_records_written_total") >= 0
        conn.close()
        # Every slow client is still connected: none was cut to make room.
        for conn in slow:
            conn.setblocking(False)
            with pytest.raises(BlockingIOError):
                conn.recv(1)
    finally:
        for conn in slow:
            conn.close()
    assert failures(daemon.stop()) == []


def test_more_slow_clients_than_connections_do_not_block_authorized_scrapes(start: Any) -> None:
    # Past max_connections a new connection used to be closed at once: as many slow
    # clients as slots (256 by default; 4 here), each renewed when cut, kept every scrape
    # out. Now the one that has waited longest for its request head makes room.
    daemon = start({"bearer_token": TOKEN}, {"timeout": "30s", "max_connections": 4})
    slow = [socket.create_connection((daemon.host, daemon.port)) for _ in range(12)]
    try:
        for conn in slow:
            conn.sendall(b"GET /metr")
        for _ in range(3):
            conn = http.client.HTTPConnection(daemon.host, daemon.port, timeout=10)
            conn.request("GET", "/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
            response = conn.getresponse()
            assert response.status == 200
            assert metric(response.read().decode(), "kerno_http_connections_shed_total") >= 8
            conn.close()
    finally:
        for conn in slow:
            conn.close()
    assert failures(daemon.stop()) == []


# --- flood control, alone ----------------------------------------------------------------------


def test_limiter_bounds_the_table_and_counts_everything() -> None:
    written: list[tuple[str, str, str, int]] = []
    limiter = FailureLimiter(lambda *args: written.append(args), interval=3600, max_sources=3)
    for n in range(100):
        limiter.refuse(f"10.0.0.{n % 10}", "token_missing", f"/p{n}")
    assert limiter.pending == 100 - 4  # 3 sources + the overflow key opened a window
    limiter.stop()
    limiter.refuse("10.0.0.0", "token_missing", "/late")  # after stop: written at once
    assert written == [
        ("/p0", "token_missing", "10.0.0.0", 0),
        ("/p1", "token_missing", "10.0.0.1", 0),
        ("/p2", "token_missing", "10.0.0.2", 0),
        ("/p3", "token_missing", OVERFLOW_IP, 0),
        ("/p0", "token_missing", "10.0.0.0", 8),
        ("/p1", "token_missing", "10.0.0.1", 8),
        ("/p2", "token_missing", "10.0.0.2", 8),
        ("/p3", "token_missing", OVERFLOW_IP, 68),
        ("/late", "token_missing", "10.0.0.0", 0),
    ]
    assert sum(1 + w[3] for w in written) == 101
    assert limiter.refusals == {"token_missing": 101}
    assert limiter.records == len(written)


# --- TLS and mTLS ------------------------------------------------------------------------------


@dataclass
class Pki:
    ca: Path
    server_cert: Path
    server_key: Path
    client: ssl.SSLContext  # trusts the CA, presents a client cert from it
    stranger: ssl.SSLContext  # trusts the CA, presents a cert from another CA
    anonymous: ssl.SSLContext  # trusts the CA, no client cert


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _cert(
    subject: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: tuple[x509.Name, ec.EllipticCurvePrivateKey] | None,
    *,
    ca: bool = False,
    server: bool = False,
) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    issuer_name, issuer_key = issuer if issuer is not None else (_name(subject), key)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if ca:
        builder = builder.add_extension(
            x509.KeyUsage(True, False, False, False, False, True, True, False, False), True
        ).add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
    else:
        builder = builder.add_extension(
            x509.ExtendedKeyUsage(
                [x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]
                if server
                else [x509.oid.ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            False,
        ).add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()), False
        )
    if server:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            False,
        )
    return builder.sign(issuer_key, hashes.SHA256())


def _write(directory: Path, name: str, cert: x509.Certificate, key: Any = None) -> Path:
    cert_path = directory / f"{name}.crt"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    if key is not None:
        key_path = directory / f"{name}.key"
        key_path.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
    return cert_path


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    """A CA, a server and a client cert from it, and a client cert from another CA (tmp only)."""
    d = tmp_path_factory.mktemp("pki")
    keys = {n: ec.generate_private_key(ec.SECP256R1()) for n in ("ca", "other", "srv", "c", "x")}
    ca = _cert("kerno test CA", keys["ca"], None, ca=True)
    other = _cert("another CA", keys["other"], None, ca=True)
    ca_issuer = (ca.subject, keys["ca"])
    _write(d, "ca", ca)
    _write(d, "server", _cert("kerno server", keys["srv"], ca_issuer, server=True), keys["srv"])
    _write(d, "client", _cert("kerno client", keys["c"], ca_issuer), keys["c"])
    _write(d, "stranger", _cert("stranger", keys["x"], (other.subject, keys["other"])), keys["x"])

    def client(name: str | None) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=str(d / "ca.crt"))
        if name is not None:
            ctx.load_cert_chain(str(d / f"{name}.crt"), str(d / f"{name}.key"))
        return ctx

    return Pki(
        d / "ca.crt",
        d / "server.crt",
        d / "server.key",
        client("client"),
        client("stranger"),
        client(None),
    )


def test_tls_with_token(start: Any, pki: Pki) -> None:
    daemon = start(
        {
            "bearer_token": TOKEN,
            "tls_cert_file": str(pki.server_cert),
            "tls_key_file": str(pki.server_key),
        }
    )
    assert daemon.request("/metrics", TOKEN, tls=pki.anonymous)[0] == 200
    assert daemon.request("/metrics", tls=pki.anonymous)[0] == 401
    assert [d["reason"] for d in failures(daemon.stop())] == ["token_missing"]


def test_mtls(start: Any, pki: Pki, capsys: pytest.CaptureFixture[str]) -> None:
    daemon = start(
        {
            "tls_cert_file": str(pki.server_cert),
            "tls_key_file": str(pki.server_key),
            "client_ca_file": str(pki.ca),
        }
    )
    assert "clients are authenticated by mTLS" in capsys.readouterr().err
    assert daemon.request("/metrics", tls=pki.client)[0] == 200
    for refused in (pki.stranger, pki.anonymous):
        with pytest.raises((ssl.SSLError, ConnectionError, http.client.HTTPException)):
            daemon.request("/metrics", tls=refused)
    assert daemon.request("/metrics", tls=pki.client)[0] == 200
    # A plain-HTTP client on the TLS port is refused at the handshake too.
    with pytest.raises((ConnectionError, http.client.HTTPException)):
        daemon.request("/metrics")
    records = daemon.stop()
    assert capsys.readouterr().err == ""  # refused handshakes are audited, not logged
    ip = "[REDACTED:ip]"
    endpoint = auth.HANDSHAKE_ENDPOINT
    assert failures(records) == [
        {"endpoint": endpoint, "reason": "mtls_failure", "remote_ip": ip, "suppressed": 0},
        {"endpoint": endpoint, "reason": "mtls_failure", "remote_ip": ip, "suppressed": 1},
    ]
