"""The analyzer plugin against a loopback server speaking each provider's wire format.

Every test uses a real AuditLog on tmp_path and reads its file back; every
record must pass the published schema.
"""

from __future__ import annotations

import datetime
import io
import ipaddress
import json
import ssl
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from helpers import stream_records
from kerno_otel_plugins import analyzer
from kerno_otel_plugins._ai_prompt import template_text

from kerno_otel import AIProvider, PluginInfo
from kerno_otel.audit.log import AuditLog
from kerno_otel.config import SECTION_DEFAULTS, AuditConfig, Config
from kerno_otel.daemon.plugins import PluginHost
from kerno_otel.findings import Analysis, Analyzer, Finding, Signals
from kerno_otel.hookspecs import DaemonContext
from kerno_otel.records.schema import SchemaSet
from kerno_otel.records.validate import RecordValidator
from kerno_otel.telemetry import Telemetry

API_KEY = "sk-test-0123456789abcdefghij"
CYCLE = "cycle-20261127-180000"
OFF = Telemetry.off()
CYCLE2 = "cycle-20261127-180100"

PATHS = {
    "anthropic": "/v1/messages",
    "openai": "/v1/chat/completions",
    "ollama": "/api/chat",
}


def _reply(provider: str, text: str) -> dict[str, Any]:
    """A response in the provider's real format, with usage of 11 in / 7 out."""
    if provider == "anthropic":
        return {
            "id": "msg_01",
            "type": "message",
            "role": "assistant",
            "model": "claude-test",
            "content": [{"type": "text", "text": text}],
            "stop_reason": "end_turn",
            "usage": {"input_tokens": 11, "output_tokens": 7},
        }
    if provider == "openai":
        return {
            "id": "chatcmpl-1",
            "object": "chat.completion",
            "model": "gpt-test",
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": text},
                    "finish_reason": "stop",
                }
            ],
            "usage": {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18},
        }
    return {
        "model": "llama-test",
        "created_at": "2026-11-27T18:00:00Z",
        "message": {"role": "assistant", "content": text},
        "done": True,
        "prompt_eval_count": 11,
        "eval_count": 7,
    }


@dataclass
class Request:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Server:
    url: str
    requests: list[Request] = field(default_factory=list)
    status: int = 200
    delay: float = 0.0
    text: str = "Memory pressure on the host; check the biggest consumers."


class _QuietServer(ThreadingHTTPServer):
    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a refused TLS handshake is the point of one test


def serve(tls: ssl.SSLContext | None = None) -> Iterator[Server]:
    state = Server(url="")

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("content-length", "0"))
            body = self.rfile.read(length)
            state.requests.append(
                Request("POST", self.path, {k.lower(): v for k, v in self.headers.items()}, body)
            )
            if state.delay:
                time.sleep(state.delay)
            # Through a proxy the request line carries the absolute URL.
            path = urlsplit(self.path).path
            provider = next((p for p, known in PATHS.items() if known == path), None)
            if provider is None or state.status != 200:
                status = 404 if provider is None else state.status
                payload = json.dumps({"error": {"message": "overloaded " + API_KEY}}).encode()
            else:
                status = 200
                payload = json.dumps(_reply(provider, state.text)).encode()
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    httpd = _QuietServer(("127.0.0.1", 0), Handler)
    if tls is not None:
        httpd.socket = tls.wrap_socket(httpd.socket, server_side=True)
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    scheme = "https" if tls is not None else "http"
    state.url = f"{scheme}://127.0.0.1:{httpd.server_address[1]}"
    try:
        yield state
    finally:
        httpd.shutdown()
        httpd.server_close()


@pytest.fixture
def server() -> Iterator[Server]:
    yield from serve()


def ai_config(server: Server | None, provider: str | None, **overrides: Any) -> Config:
    ai = dict(SECTION_DEFAULTS["ai"])
    ai.update(
        enabled=provider is not None,
        provider=provider,
        model=f"{provider}-model" if provider else None,
        api_key=API_KEY,
        endpoint=server.url if server else None,
        timeout="5s",
    )
    ai.update(overrides)
    return Config(sections={"ai": ai})


@pytest.fixture
def audit(tmp_path: Path) -> Iterator[AuditLog]:
    log = AuditLog(AuditConfig(file_path=str(tmp_path / "audit.jsonl")))
    try:
        yield log
    finally:
        log.close()


def ai_calls(audit: AuditLog) -> list[dict[str, Any]]:
    """Flush, check every record against the schema, return the ai.call records."""
    audit.flush()
    records = stream_records(Path(audit.config.file_path))
    validator = RecordValidator(SchemaSet.builtin())
    for record in records:
        assert validator.check(record) is None, record
    return [r for r in records if r["type"] == "ai.call"]


def log_bytes(audit: AuditLog) -> bytes:
    audit.flush()
    return Path(audit.config.file_path).read_bytes()


LEAKY_SIGNALS = Signals(
    window_s=30.0,
    values={"mem.used_pct": 96.5, "tcp.retransmit_pct": 4.25},
    absent=frozenset({"syscall.p99_ns"}),
    context={
        "top_process": "postgres pid=4242 cwd=/home/alice/secret",
        "peer": "10.1.2.3:5432",
    },
)
FINDINGS = [
    Finding(
        "oom_imminent",
        "CRITICAL",
        "Memory almost exhausted",
        {"mem_used_pct": 96.5, "process": "postgres-main", "pid": 4242},
    ),
    Finding(
        "tcp_retransmit_storm",
        "WARNING",
        "TCP retransmits above 2%",
        {"retransmit_pct": 4.25, "peer": "10.1.2.3", "log": "/home/alice/secret/app.log"},
    ),
]
OTHER_FINDINGS = [Finding("fd_leak", "WARNING", "Open files keep growing", {"growth": 12.0})]


# --- each provider's wire format ---------------------------------------------------------------


@pytest.mark.parametrize("provider", ["anthropic", "openai", "ollama"])
def test_miss_then_hit_speaks_the_wire_format(
    provider: str, server: Server, audit: AuditLog
) -> None:
    built = analyzer.build(audit, ai_config(server, provider), env={})

    first = built.analyze(CYCLE, FINDINGS, LEAKY_SIGNALS)
    second = built.analyze(CYCLE2, list(reversed(FINDINGS)), LEAKY_SIGNALS)

    assert (first.text, first.cache, first.fallback) == (server.text, "miss", False)
    assert (second.text, second.cache, second.fallback) == (server.text, "hit", False)
    assert (first.provider, first.model) == (provider, f"{provider}-model")
    assert len(server.requests) == 1  # the hit made no request
    request = server.requests[0]
    assert request.path == PATHS[provider]
    body = request.json()
    if provider == "anthropic":
        assert request.headers["x-api-key"] == API_KEY
        assert request.headers["anthropic-version"] == "2023-06-01"
        assert "authorization" not in request.headers
        assert sorted(body) == ["max_tokens", "messages", "model", "system", "temperature"]
        assert (body["max_tokens"], body["temperature"]) == (1024, 0.2)
        assert [m["role"] for m in body["messages"]] == ["user"]
    elif provider == "openai":
        assert request.headers["authorization"] == f"Bearer {API_KEY}"
        assert sorted(body) == ["max_tokens", "messages", "model", "temperature"]
        assert [m["role"] for m in body["messages"]] == ["system", "user"]
    else:
        assert body["stream"] is False
        assert body["options"] == {"temperature": 0.2, "num_predict": 1024}
        assert [m["role"] for m in body["messages"]] == ["system", "user"]
    assert body["model"] == f"{provider}-model"

    calls = ai_calls(audit)
    assert [c["details"]["cache"] for c in calls] == ["miss", "hit"]
    assert [c["details"]["cycle_id"] for c in calls] == [CYCLE, CYCLE2]
    assert [c["outcome"] for c in calls] == ["success", "success"]
    miss, hit = calls[0]["details"], calls[1]["details"]
    assert miss["tokens"] == {"input": 11, "output": 7}
    assert miss["response_size"] == len(server.text.encode())
    # The prompt the server got: the system text plus the user message, in bytes.
    messages = body["messages"]
    system = body.get("system") or messages[0]["content"]
    assert miss["prompt_size"] == len(system.encode()) + len(messages[-1]["content"].encode())
    assert (miss["provider"], miss["model"], miss["privacy_mode"]) == (
        provider,
        f"{provider}-model",
        "summary",
    )
    assert "error" not in miss
    assert hit["tokens"] == {"input": 0, "output": 0}
    assert (hit["prompt_size"], hit["response_size"]) == (0, 0)
    # Neither the key, nor the prompt, nor the response ever reaches the log.
    written = log_bytes(audit)
    assert API_KEY.encode() not in written
    assert server.text.encode() not in written
    assert b"Memory almost exhausted" not in written


@pytest.mark.parametrize("provider", ["anthropic", "openai", "ollama"])
@pytest.mark.parametrize("status", [500, 503])
def test_provider_error_falls_back(
    provider: str, status: int, server: Server, audit: AuditLog
) -> None:
    server.status = status
    built = analyzer.build(audit, ai_config(server, provider), env={})

    result = built.analyze(CYCLE, FINDINGS, LEAKY_SIGNALS)

    assert result.fallback is True
    assert result.text == template_text(FINDINGS)
    [call] = ai_calls(audit)
    assert (call["outcome"], call["severity"]) == ("failure", "WARN")
    assert call["details"]["error"] == f"HTTP {status}"
    assert call["details"]["tokens"] == {"input": 0, "output": 0}
    assert call["details"]["prompt_size"] > 0
    assert API_KEY.encode() not in log_bytes(audit)
    # A failure is not cached: the next cycle asks again.
    server.status = 200
    again = built.analyze(CYCLE2, FINDINGS, LEAKY_SIGNALS)
    assert (again.cache, again.fallback) == ("miss", False)


def test_timeout_falls_back(server: Server, audit: AuditLog) -> None:
    server.delay = 1.0
    built = analyzer.build(audit, ai_config(server, "openai", timeout="200ms"), env={})

    result = built.analyze(CYCLE, FINDINGS, LEAKY_SIGNALS)

    assert result.fallback is True
    [call] = ai_calls(audit)
    assert (call["outcome"], call["details"]["error"]) == ("failure", "timeout")


def test_connection_refused_falls_back(audit: AuditLog) -> None:
    config = ai_config(None, "ollama", endpoint="http://127.0.0.1:9")
    result = analyzer.build(audit, config, env={}).analyze(CYCLE, FINDINGS, LEAKY_SIGNALS)

    assert result.fallback is True
    [call] = ai_calls(audit)
    assert call["details"]["error"] == "connection failed"


def test_rate_limited_cycle(server: Server, audit: AuditLog) -> None:
    built = analyzer.build(audit, ai_config(server, "anthropic", rate_limit_per_minute=1), env={})

    first = built.analyze(CYCLE, FINDINGS, LEAKY_SIGNALS)
    second = built.analyze(CYCLE2, OTHER_FINDINGS, LEAKY_SIGNALS)

    assert (first.fallback, second.fallback) == (False, True)
    assert second.text == template_text(OTHER_FINDINGS)
    assert len(server.requests) == 1
    calls = ai_calls(audit)
    assert [c["outcome"] for c in calls] == ["success", "failure"]
    limited = calls[1]["details"]
    assert limited["error"] == "rate limited"
    assert (limited["cache"], limited["prompt_size"], limited["response_size"]) == ("miss", 0, 0)
    assert limited["cycle_id"] == CYCLE2


def test_cache_hit_does_not_use_the_rate_limit_and_expires(server: Server, audit: AuditLog) -> None:
    now = [1000.0]
    config = ai_config(server, "openai", rate_limit_per_minute=1, cache_ttl="5m")
    built = analyzer.build(audit, config, env={}, clock=lambda: now[0])

    built.analyze(CYCLE, FINDINGS, LEAKY_SIGNALS)
    hit = built.analyze(CYCLE, FINDINGS, LEAKY_SIGNALS)
    now[0] += 301  # past the TTL, and a minute's token is back
    expired = built.analyze(CYCLE2, FINDINGS, LEAKY_SIGNALS)

    assert (hit.cache, expired.cache, expired.fallback) == ("hit", "miss", False)
    assert len(server.requests) == 2
    assert [c["details"]["cache"] for c in ai_calls(audit)] == ["miss", "hit", "miss"]


# --- privacy modes -----------------------------------------------------------------------------

LEAKS = [b"10.1.2.3", b"4242", b"/home/alice", b"alice"]


def test_redacted_mode_sends_no_ip_pid_or_path(server: Server, audit: AuditLog) -> None:
    built = analyzer.build(audit, ai_config(server, "openai", privacy_mode="redacted"), env={})

    built.analyze(CYCLE, FINDINGS, LEAKY_SIGNALS)

    [request] = server.requests
    for leak in LEAKS:
        assert leak not in request.body, leak
    prompt = request.json()["messages"][-1]["content"]
    # The evidence is there, with the leaks replaced.
    assert "postgres-main" in prompt
    assert "[REDACTED:ip]" in prompt
    assert "[REDACTED:pid]" in prompt
    assert "/home[REDACTED:path]" in prompt or "[REDACTED:path]" in prompt
    [call] = ai_calls(audit)
    redactions = call["details"]["redactions"]
    assert redactions["ip"] == 2
    assert redactions["pid"] == 2
    assert redactions["path"] == 2
    assert call["details"]["privacy_mode"] == "redacted"


def test_summary_mode_sends_no_evidence_text(server: Server, audit: AuditLog) -> None:
    built = analyzer.build(audit, ai_config(server, "anthropic"), env={})

    built.analyze(CYCLE, FINDINGS, LEAKY_SIGNALS)

    [request] = server.requests
    for leak in [*LEAKS, b"postgres", b"app.log", b"5432", b"cwd"]:
        assert leak not in request.body, leak
    prompt = request.json()["messages"][0]["content"]
    expected = (
        "Diagnosis cycle over a 30s window.\n"
        "Findings (2):\n"
        "- [CRITICAL] oom_imminent: Memory almost exhausted\n"
        "  evidence: mem_used_pct=96.5, pid=[REDACTED:pid]\n"
        "- [WARNING] tcp_retransmit_storm: TCP retransmits above 2%\n"
        "  evidence: retransmit_pct=4.25\n"
        "Signals:\n"
        "  mem.used_pct=96.5\n"
        "  tcp.retransmit_pct=4.25\n"
        "Not measured: syscall.p99_ns\n"
    )
    assert expected == prompt
    [call] = ai_calls(audit)
    assert call["details"]["redactions"] == {"pid": 1}


def test_full_mode_sends_evidence_as_is(server: Server, audit: AuditLog) -> None:
    built = analyzer.build(audit, ai_config(server, "ollama", privacy_mode="full"), env={})

    built.analyze(CYCLE, FINDINGS, LEAKY_SIGNALS)

    [request] = server.requests
    for leak in LEAKS:
        assert leak in request.body, leak
    [call] = ai_calls(audit)
    assert call["details"]["redactions"] == {}
    assert call["details"]["privacy_mode"] == "full"
    # What was sent stays out of the log.
    for leak in LEAKS:
        assert leak not in log_bytes(audit)


# --- no provider, keys, plugins, the daemon ----------------------------------------------------


@pytest.mark.parametrize(
    "config",
    [
        Config(),  # defaults: ai.enabled false, no provider
        Config(sections={"ai": {**SECTION_DEFAULTS["ai"], "provider": "openai"}}),
        Config(sections={"ai": {**SECTION_DEFAULTS["ai"], "enabled": True}}),
    ],
)
def test_no_provider_means_template_and_no_ai_call(config: Config, audit: AuditLog) -> None:
    built = analyzer.build(audit, config, env={})

    result = built.analyze(CYCLE, FINDINGS, LEAKY_SIGNALS)

    assert built.enabled is False
    assert result == Analysis(template_text(FINDINGS), "template", "template", "miss", True)
    assert ai_calls(audit) == []


def test_a_healthy_cycle_asks_no_provider(server: Server, audit: AuditLog) -> None:
    built = analyzer.build(audit, ai_config(server, "openai"), env={})
    healthy = [Finding("healthy_system", "INFO", "All signals within thresholds")]

    result = built.analyze(CYCLE, healthy, LEAKY_SIGNALS)

    assert result == Analysis(
        "No problems found in this cycle.\n", "template", "template", "miss", True
    )
    assert server.requests == []
    assert ai_calls(audit) == []


def test_template_text() -> None:
    expected = (
        "2 findings (1 critical, 1 warning):\n"
        "- CRITICAL oom_imminent: Memory almost exhausted (free memory or raise limits before "
        "the OOM killer picks a victim)\n"
        "- WARNING tcp_retransmit_storm: TCP retransmits above 2% (check packet loss on the "
        "path, NIC errors and congestion)\n"
        "Start with oom_imminent: it is the most severe.\n"
    )
    assert expected == template_text(list(reversed(FINDINGS)))
    healthy = [Finding("healthy_system", "INFO", "All signals within thresholds")]
    assert template_text(healthy) == "No problems found in this cycle.\n"


def test_api_key_from_environment(server: Server, audit: AuditLog) -> None:
    config = ai_config(server, "anthropic", api_key=None)
    built = analyzer.build(audit, config, env={"KERNO_AI_API_KEY": "env-key-42"})

    built.analyze(CYCLE, FINDINGS, LEAKY_SIGNALS)

    assert server.requests[0].headers["x-api-key"] == "env-key-42"


def test_missing_key_or_ca_file_is_an_audited_failure(server: Server, audit: AuditLog) -> None:
    no_key = analyzer.build(audit, ai_config(server, "anthropic", api_key=None), env={})
    bad_ca = analyzer.build(
        audit, ai_config(server, "openai", ca_cert_file="/nonexistent/ca.pem"), env={}
    )

    assert no_key.analyze(CYCLE, FINDINGS, LEAKY_SIGNALS).fallback is True
    assert bad_ca.analyze(CYCLE2, FINDINGS, LEAKY_SIGNALS).fallback is True

    assert server.requests == []
    errors = [c["details"]["error"] for c in ai_calls(audit)]
    assert errors == [
        "no API key (ai.api_key or KERNO_AI_API_KEY)",
        "config error: ai.ca_cert_file",
    ]


class EchoProvider:
    """A third-party provider, as a plugin would register it."""

    name = "echo"

    def __init__(self, fail: bool = False) -> None:
        self.prompts: list[str] = []
        self.fail = fail

    def complete(
        self, prompt: str, system: str | None, model: str, max_tokens: int, temperature: float
    ) -> tuple[str, int, int]:
        self.prompts.append(prompt)
        if self.fail:
            raise RuntimeError("boom at 10.9.9.9 with the whole prompt")
        return "echo says hi", 3, 2


def test_plugin_provider(audit: AuditLog) -> None:
    echo, broken = EchoProvider(), EchoProvider(fail=True)
    providers = {"echo": echo, "broken": broken}
    for name in ("echo", "broken"):
        ai = {**SECTION_DEFAULTS["ai"], "enabled": True, "provider": name}
        built = analyzer.build(audit, Config(sections={"ai": ai}), providers=providers, env={})
        built.analyze(CYCLE, FINDINGS, LEAKY_SIGNALS)

    assert isinstance(echo, AIProvider)
    assert len(echo.prompts) == 1 and len(broken.prompts) == 1
    ok, failed = ai_calls(audit)
    assert (ok["details"]["provider"], ok["details"]["model"]) == ("echo", "default")
    assert ok["details"]["tokens"] == {"input": 3, "output": 2}
    assert failed["details"]["error"] == "provider raised RuntimeError"


def test_make_analyzer_uses_registered_providers(audit: AuditLog) -> None:
    echo = EchoProvider()
    ai = {**SECTION_DEFAULTS["ai"], "enabled": True, "provider": "echo", "model": "echo-1"}
    config = Config(sections={"ai": ai})

    # The hook as the daemon and `kerno-otel doctor` call it.
    host = PluginHost({}, {}, io.StringIO())
    host.register_object(analyzer, PluginInfo(analyzer.NAME, "kerno-otel", "0.1.0"))
    built: Analyzer = host.first(  # the contract the doctor relies on
        "make_analyzer", audit=audit, config=config, providers={"echo": echo}, telemetry=OFF
    )
    result = built.analyze(CYCLE, FINDINGS, LEAKY_SIGNALS)

    assert (result.text, result.provider, result.model) == ("echo says hi", "echo", "echo-1")
    assert len(echo.prompts) == 1


def test_plugin_cannot_take_over_a_builtin_name(server: Server, audit: AuditLog) -> None:
    impostor = EchoProvider()
    built = analyzer.build(
        audit, ai_config(server, "openai"), providers={"openai": impostor}, env={}
    )

    built.analyze(CYCLE, FINDINGS, LEAKY_SIGNALS)

    assert impostor.prompts == []
    assert len(server.requests) == 1


def test_daemon_analyzer_and_live_reload(server: Server, audit: AuditLog) -> None:
    built = analyzer.make_analyzer(audit, Config(), {}, OFF)
    context = DaemonContext(
        audit=audit, config=Config(), request_stop=lambda reason: None, analyzer=built
    )
    assert built.enabled is False

    new = ai_config(server, "openai", privacy_mode="redacted")
    context.config = new
    analyzer.config_reload(context, new, None)
    assert context.analyzer is built  # the doctor's reference stays valid
    assert built.enabled is True
    result = built.analyze(CYCLE, FINDINGS, LEAKY_SIGNALS)
    assert result.fallback is False
    # A failed reload changes nothing.
    analyzer.config_reload(context, None, "bad config")
    assert built.provider_name == "openai"
    analyzer.daemon_shutdown(context)

    [call] = ai_calls(audit)
    assert call["details"]["privacy_mode"] == "redacted"


# --- transport: proxy and CA file --------------------------------------------------------------


def test_proxy_carries_the_request(server: Server, audit: AuditLog) -> None:
    # The endpoint does not resolve; only the proxy (our loopback server) can answer.
    config = ai_config(server, "openai", endpoint="http://api.example.invalid", proxy=server.url)

    result = analyzer.build(audit, config, env={}).analyze(CYCLE, FINDINGS, LEAKY_SIGNALS)

    assert result.fallback is False
    assert [r.path for r in server.requests] == ["http://api.example.invalid/v1/chat/completions"]


def _tls_files(directory: Path) -> tuple[Path, Path, Path]:
    """A CA and a server certificate for 127.0.0.1 signed by it: (ca, cert, key)."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(True, False, False, False, False, True, True, False, False), True
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False)
        .sign(ca_key, hashes.SHA256())
    )
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
        )
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    paths = directory / "ca.pem", directory / "server.pem", directory / "server.key"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return paths


def test_ca_cert_file_is_trusted_and_required(tmp_path: Path, audit: AuditLog) -> None:
    ca, cert, key = _tls_files(tmp_path)
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(cert, key)
    for server in serve(tls):
        trusted = analyzer.build(
            audit, ai_config(server, "anthropic", ca_cert_file=str(ca)), env={}
        )
        untrusted = analyzer.build(audit, ai_config(server, "anthropic"), env={})

        assert trusted.analyze(CYCLE, FINDINGS, LEAKY_SIGNALS).fallback is False
        assert untrusted.analyze(CYCLE2, FINDINGS, LEAKY_SIGNALS).fallback is True
        assert len(server.requests) == 1

    calls = ai_calls(audit)
    assert [c["outcome"] for c in calls] == ["success", "failure"]
    assert calls[1]["details"]["error"] == "TLS verification failed"


def test_a_bad_ai_section_built_in_code_never_raises(audit: AuditLog) -> None:
    ai = {
        "enabled": True,
        "provider": "ollama",
        "endpoint": "ftp://llm.internal",
        "cache_ttl": "soon",
        "rate_limit_per_minute": -1,
        "temperature": "hot",
        "privacy_mode": "everything",
    }
    built = analyzer.build(audit, Config(sections={"ai": ai}), env={})

    result = built.analyze(CYCLE, FINDINGS, LEAKY_SIGNALS)

    assert result.fallback is True
    [call] = ai_calls(audit)
    assert call["details"]["error"] == "config error: ai.endpoint"
    assert call["details"]["privacy_mode"] == "summary"  # an unknown mode is the strictest
