"""In-process OTLP log receivers on opentelemetry-proto's generated services, over loopback.

Both keep every request they acknowledged (as received), can be told to fail
(gRPC UNAVAILABLE / HTTP 503) for a number of requests or to hold every request
until released (a stalled collector), and signal what they got, so a test
waits for an event instead of sleeping.
"""

from __future__ import annotations

import gzip
import ssl
import threading
from concurrent import futures
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import grpc
import orjson
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2_grpc
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
    ExportLogsServiceRequest,
    ExportLogsServiceResponse,
)

from kerno_otel.forward.otlp import rebuild_lines


class _Behaviour:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self._kept = threading.Condition(self.lock)
        self.requests: list[ExportLogsServiceRequest] = []
        self.records = 0  # log records in the requests kept
        self.fail_next = 0  # answer this many requests with an error
        self.failed = 0
        self.gzipped = 0  # HTTP requests that came gzip-encoded
        #: Open (set) by default; cleared, every request waits at it until it is set again.
        self.gate = threading.Event()
        self.gate.set()
        #: Set once a request is waiting at the closed gate.
        self.holding = threading.Event()

    def decide(self) -> bool:
        """True: accept this request; False: answer with an error."""
        if not self.gate.is_set():
            self.holding.set()
            self.gate.wait()
        with self.lock:
            if self.fail_next > 0:
                self.fail_next -= 1
                self.failed += 1
                return False
            return True

    def keep(self, request: ExportLogsServiceRequest) -> None:
        with self._kept:
            self.requests.append(request)
            self.records += sum(
                len(scope.log_records)
                for resource in request.resource_logs
                for scope in resource.scope_logs
            )
            self._kept.notify_all()

    def wait_for_records(self, count: int, timeout: float = 20.0) -> None:
        """Return once the requests kept hold at least ``count`` log records."""
        with self._kept:
            got = self._kept.wait_for(lambda: self.records >= count, timeout)
            assert got, f"{self.records} records received, waited for {count}"

    def lines(self) -> list[bytes]:
        with self.lock:
            requests = list(self.requests)
        return [line for request in requests for line in rebuild_lines(request)]

    def seqs(self) -> list[int]:
        return [orjson.loads(line)["seq"] for line in self.lines()]


def self_signed(directory: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and localhost, and its key (PEM files)."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    directory.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


class GrpcReceiver(_Behaviour):
    """A ``LogsServiceServicer`` on 127.0.0.1; ``port`` is fixed across stop/start."""

    def __init__(self, port: int = 0, tls: tuple[Path, Path] | None = None) -> None:
        super().__init__()
        self.port = port
        self.tls = tls
        self._server: grpc.Server | None = None

    def start(self) -> GrpcReceiver:
        behaviour = self

        class Servicer(logs_service_pb2_grpc.LogsServiceServicer):
            def Export(
                self, request: ExportLogsServiceRequest, context: Any
            ) -> ExportLogsServiceResponse:
                if not behaviour.decide():
                    context.abort(grpc.StatusCode.UNAVAILABLE, "try again later")
                behaviour.keep(request)
                return ExportLogsServiceResponse()

        server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        logs_service_pb2_grpc.add_LogsServiceServicer_to_server(Servicer(), server)
        address = f"127.0.0.1:{self.port}"
        if self.tls is None:
            self.port = server.add_insecure_port(address)
        else:
            cert, key = (path.read_bytes() for path in self.tls)
            credentials = grpc.ssl_server_credentials([(key, cert)])
            self.port = server.add_secure_port(address, credentials)
        server.start()
        self._server = server
        return self

    @property
    def endpoint(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.gate.set()  # held requests answer; the server stops without waiting on them
        if self._server is not None:
            self._server.stop(grace=None).wait(5)
            self._server = None


class HttpReceiver(_Behaviour):
    """POST /v1/logs with a protobuf body; answers ``ExportLogsServiceResponse`` or 503."""

    def __init__(self, port: int = 0, tls: tuple[Path, Path] | None = None) -> None:
        super().__init__()
        self.port = port
        self.tls = tls
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> HttpReceiver:
        behaviour = self

        class Handler(BaseHTTPRequestHandler):
            # HTTP/1.0: one request per connection, so a stopped receiver is really gone
            # (no kept-alive connection still answering).

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                    behaviour.gzipped += 1
                if self.path != "/v1/logs":
                    self._answer(404, b"")
                    return
                if not behaviour.decide():
                    self._answer(503, b"", {"Retry-After": "0"})
                    return
                behaviour.keep(ExportLogsServiceRequest.FromString(body))
                self._answer(200, ExportLogsServiceResponse().SerializeToString())

            def _answer(self, code: int, body: bytes, extra: dict[str, str] | None = None) -> None:
                self.send_response(code)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(body)))
                for key, value in (extra or {}).items():
                    self.send_header(key, value)
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        ThreadingHTTPServer.allow_reuse_address = True
        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        if self.tls is not None:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(*self.tls)
            self._server.socket = context.wrap_socket(self._server.socket, server_side=True)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    @property
    def endpoint(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}/v1/logs"

    def stop(self) -> None:
        self.gate.set()  # held requests answer; the server stops without waiting on them
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


class TelemetryReceiver:
    """OTLP/gRPC trace and metrics services on one loopback port (the daemon's own
    telemetry), keeping every request; a test waits on :meth:`wait_for`. Clear ``gate``
    and every request waits at it (a collector that does not answer); ``holding`` is
    set once one does."""

    def __init__(self) -> None:
        self._changed = threading.Condition()
        self.trace_requests: list[Any] = []
        self.metric_requests: list[Any] = []
        self.port = 0
        self._server: grpc.Server | None = None
        self.gate = threading.Event()
        self.gate.set()
        self.holding = threading.Event()

    def start(self) -> TelemetryReceiver:
        from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2_grpc
        from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
            ExportMetricsServiceResponse,
        )
        from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc
        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
            ExportTraceServiceResponse,
        )

        keep = self._keep

        class Traces(trace_service_pb2_grpc.TraceServiceServicer):
            def Export(self, request: Any, context: Any) -> ExportTraceServiceResponse:
                keep("trace", request)
                return ExportTraceServiceResponse()

        class Metrics(metrics_service_pb2_grpc.MetricsServiceServicer):
            def Export(self, request: Any, context: Any) -> ExportMetricsServiceResponse:
                keep("metric", request)
                return ExportMetricsServiceResponse()

        server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(Traces(), server)
        metrics_service_pb2_grpc.add_MetricsServiceServicer_to_server(Metrics(), server)
        self.port = server.add_insecure_port("127.0.0.1:0")
        server.start()
        self._server = server
        return self

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _keep(self, kind: str, request: Any) -> None:
        if not self.gate.is_set():
            self.holding.set()
            self.gate.wait()
        with self._changed:
            (self.trace_requests if kind == "trace" else self.metric_requests).append(request)
            self._changed.notify_all()

    def spans(self) -> list[Any]:
        """Every span received, as ``opentelemetry.proto.trace.v1.Span`` messages."""
        with self._changed:
            requests = list(self.trace_requests)
        return [
            span
            for request in requests
            for resource in request.resource_spans
            for scope in resource.scope_spans
            for span in scope.spans
        ]

    def span_resources(self) -> list[dict[str, Any]]:
        with self._changed:
            requests = list(self.trace_requests)
        return [
            {kv.key: kv.value.string_value for kv in resource.resource.attributes}
            for request in requests
            for resource in request.resource_spans
        ]

    def metrics(self) -> dict[str, Any]:
        """The last exported point data of each metric, by name."""
        with self._changed:
            requests = list(self.metric_requests)
        out: dict[str, Any] = {}
        for request in requests:
            for resource in request.resource_metrics:
                for scope in resource.scope_metrics:
                    for metric in scope.metrics:
                        out[metric.name] = metric
        return out

    def wait_for(self, done: Any, timeout: float = 30.0) -> None:
        """Return once ``done(self)`` is true (checked as requests arrive)."""
        with self._changed:
            assert self._changed.wait_for(lambda: done(self), timeout), "not received in time"

    def stop(self) -> None:
        self.gate.set()  # held requests answer; the server stops without waiting on them
        if self._server is not None:
            self._server.stop(grace=None).wait(5)
            self._server = None
