"""The OTLP forwarder: ships what the audit files hold to a collector, at-least-once.

The files are the source of truth and the buffer: a thread reads whole lines
from a persistent cursor (:mod:`kerno_otel.forward.cursor`), maps them losslessly
(:mod:`kerno_otel.forward.otlp`) into one ``ExportLogsServiceRequest`` per
``batch_size`` lines, sends it, and moves the cursor only once the collector
acknowledged. A failed batch is retried, the same batch, with exponential
backoff capped at 30 s, forever; the audit writer never waits for any of this.
A record is re-sent only when its batch was not acknowledged (a crash or a
failure after the collector got it), so a receiver deduplicates on stream +
``seq``.

Which exporter layer, and why: the official exporters' public ``export()``
takes SDK ``ReadableLogRecord``s and encodes them with
``opentelemetry.exporter.otlp.proto.common``, whose ``_encode_attributes``
logs and *drops* an attribute it cannot encode (an integer beyond int64, say)
— a silent loss an audit trail cannot have — and the SDK records add an
``observed_time`` and need SDK objects per record (the cost of building them
is most of a forwarded record's CPU). So we serialize the request ourselves
(:func:`kerno_otel.forward.otlp.encode_request`) and hand the bytes to the exporters
one layer down, keeping everything they do for the wire: endpoint, TLS,
headers, compression, timeout, the ``OTEL_EXPORTER_OTLP_*`` variables, their
retry of transient errors and gRPC reconnection:

- gRPC: ``OTLPLogExporter`` subclassed so its stub sends bytes (the same
  ``LogsService/Export`` method without the request serializer) and its
  ``_translate_data`` is the identity; ``export`` is then the exporter's own
  retrying ``_export``.
- HTTP/protobuf: the exporter's ``_OTLPHTTPClient`` (``exporter._client``),
  given the serialized request.

Both are private in opentelemetry-python 1.45; pyproject pins ``<2`` and the
tests run both against real loopback receivers.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Protocol, TextIO, cast
from urllib.parse import urlparse

import orjson
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceResponse

from kerno_otel.audit.chain import line_hash, parse_ts
from kerno_otel.forward.cursor import Cursor, Line, StreamReader, last_seq_on_disk, seq_of
from kerno_otel.forward.options import (
    BACKOFF_CAP_S,
    ForwarderOptions,
    quiet,
    route_sdk_logging,
)
from kerno_otel.forward.otlp import encode_request

__all__ = ["BACKOFF_CAP_S", "Forwarder", "ForwarderOptions", "Sender", "make_sender"]


class Sender(Protocol):
    """Sends one serialized ``ExportLogsServiceRequest``; True once the collector
    acknowledged it."""

    def send(self, request: bytes) -> bool: ...

    def shutdown(self) -> None: ...


_EXPORT_METHOD: Final = "/opentelemetry.proto.collector.logs.v1.LogsService/Export"


class _RawStub:
    Export: Any


class GrpcSender:
    """OTLP/gRPC through the official exporter (see the module docstring)."""

    def __init__(self, options: ForwarderOptions) -> None:
        import grpc
        from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter
        from opentelemetry.sdk._logs.export import LogRecordExportResult

        class _RequestExporter(OTLPLogExporter):
            """Sends an already serialized request through the exporter's own retry loop."""

            def _initialize_channel_and_stub(self) -> None:
                super()._initialize_channel_and_stub()  # type: ignore[no-untyped-call]
                # The stub, minus the serializer: the request arrives as bytes. Rebuilt
                # with the channel (the exporter reconnects on UNAVAILABLE).
                raw, channel = _RawStub(), cast(Any, self._channel)
                raw.Export = channel.unary_unary(
                    _EXPORT_METHOD,
                    request_serializer=None,
                    response_deserializer=ExportLogsServiceResponse.FromString,
                )
                self._client = raw  # type: ignore[assignment]

            def _translate_data(self, data: Any) -> Any:
                return data

            def _count_data(self, data: Any) -> int:
                return 0  # only feeds the exporter's own (disabled) metrics

        credentials = None
        tls = (options.certificate_file, options.client_key_file, options.client_certificate_file)
        if any(tls):
            root, key, chain = (Path(p).read_bytes() if p else None for p in tls)
            credentials = grpc.ssl_channel_credentials(root, key, chain)
        self._success = LogRecordExportResult.SUCCESS
        self._exporter = _RequestExporter(
            endpoint=options.endpoint,
            insecure=False if credentials is not None else None,
            credentials=credentials,
            headers=dict(options.headers) or None,
            timeout=options.timeout,
            compression=grpc.Compression.Gzip if options.compression == "gzip" else None,
        )

    def send(self, request: bytes) -> bool:
        return bool(self._exporter.export(request) == self._success)  # type: ignore[arg-type]

    def shutdown(self) -> None:
        self._exporter.shutdown()


class HttpSender:
    """OTLP/HTTP-protobuf through the official exporter's HTTP client."""

    def __init__(self, options: ForwarderOptions) -> None:
        from opentelemetry.exporter.otlp.proto.http import Compression
        from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
        from opentelemetry.sdk.environment_variables import (
            _OTEL_PYTHON_EXPORTER_OTLP_HTTP_LOGS_CREDENTIAL_PROVIDER as PROVIDER,
        )

        endpoint = options.endpoint
        if endpoint is not None and urlparse(endpoint).path in ("", "/"):
            endpoint = endpoint.rstrip("/") + "/v1/logs"
        # A credential-provider session from the environment wins, as in the exporter.
        session = None if os.environ.get(PROVIDER) else _pinned_verify_session()
        self._exporter = OTLPLogExporter(
            endpoint=endpoint,
            certificate_file=options.certificate_file,
            client_key_file=options.client_key_file,
            client_certificate_file=options.client_certificate_file,
            headers=dict(options.headers) or None,
            timeout=options.timeout,
            compression=Compression.Gzip if options.compression == "gzip" else None,
            session=session,
        )

    def send(self, request: bytes) -> bool:
        return bool(self._exporter._client.export(request).success)

    def shutdown(self) -> None:
        self._exporter.shutdown()  # type: ignore[no-untyped-call]


def _pinned_verify_session() -> Any:
    """A requests session whose CA file (set by the exporter from ``certificate_file`` or
    ``OTEL_EXPORTER_OTLP_CERTIFICATE``) is not overridden by ``REQUESTS_CA_BUNDLE`` /
    ``CURL_CA_BUNDLE``, as a plain session's is (psf/requests#3829): with those set (common
    on distro images), the configured CA was silently ignored and TLS to a collector with a
    private CA failed. Proxies from the environment still apply."""
    import requests

    class PinnedVerifySession(requests.Session):
        def merge_environment_settings(self, *args: Any, **kwargs: Any) -> Any:
            settings = super().merge_environment_settings(*args, **kwargs)
            if isinstance(self.verify, str):
                settings["verify"] = self.verify
            return settings

    return PinnedVerifySession()


def make_sender(options: ForwarderOptions) -> Sender:
    if options.protocol == "http":
        return HttpSender(options)
    return GrpcSender(options)


@dataclass
class _Stats:
    records_sent: int = 0
    batches_sent: int = 0
    failures: int = 0
    retries: int = 0
    last_seq: int | None = None
    lag_records: int = 0
    lag_seconds: float = 0.0
    alarms: int = 0
    state: str = "new"


class Forwarder:
    """Ships the stream of ``live`` over OTLP from its cursor; one thread, safe to stop twice.

    ``stats()`` gives the numbers (lag in records and seconds, batches sent,
    failures). While sends fail, a lag beyond ``alarm_lag_seconds`` writes one
    stderr line, at most every ``alarm_every_seconds``; a backlog that is being
    acknowledged (a restart after downtime) is no alarm, however old its records.
    """

    def __init__(
        self,
        live: Path | str,
        options: ForwarderOptions | None = None,
        *,
        sender: Sender | None = None,
        stderr: TextIO | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.live = Path(live)
        self.options = options if options is not None else ForwarderOptions()
        self._stderr = stderr if stderr is not None else sys.stderr
        self._clock = clock
        self.cursor_path = Cursor.path_for(self.live)
        self.cursor = Cursor.load(self.cursor_path)
        self._reader = StreamReader(self.live, self.cursor, warn=self._warn)
        self._sender = sender if sender is not None else make_sender(self.options)
        self._stats = _Stats(last_seq=self.cursor.last_seq)
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._lock = threading.Lock()
        self._last_alarm = float("-inf")
        self._oldest_pending_ns: int | None = None
        self._last_acked_ns: int | None = None
        self._thread = threading.Thread(target=self._run, name="kerno-otlp-forwarder", daemon=True)
        self._stopped = False

    # -- life -------------------------------------------------------------------------

    def start(self) -> None:
        """Start the thread; one stderr line says where records go, and from which setting."""
        route_sdk_logging(self._stderr)
        self._warn(f"forwarding to {self.options.describe()}")
        self._stats.state = "running"
        self._thread.start()

    def wait_caught_up(self, timeout: float) -> bool:
        """Wait until every line on disk now is acknowledged; False after ``timeout``."""
        target = last_seq_on_disk(self.live)
        deadline = time.monotonic() + timeout
        while True:
            last = self._stats.last_seq
            if target is None or (last is not None and last >= target):
                return True
            if time.monotonic() >= deadline or not self._thread.is_alive():
                return False
            self._wake.set()
            time.sleep(0.01)

    def stop(self, timeout: float = 5.0) -> bool:
        """Stop sending, within ``timeout`` even when the collector is dead; True when the
        thread ended in time (an unacknowledged batch is simply re-sent next run)."""
        if self._stopped:
            return True
        self._stopped = True
        self._stop.set()
        self._wake.set()
        quiet(self._thread.ident, True)
        # Interrupts the exporters' own retry waits and closes the channel/session.
        try:
            self._sender.shutdown()
        except Exception as exc:
            self._warn(f"exporter shutdown failed: {type(exc).__name__}: {exc}")
        if self._thread.is_alive():
            self._thread.join(timeout)
        if not self._thread.is_alive():
            quiet(self._thread.ident, False)
        self._reader.close()
        self._stats.state = "stopped"
        return not self._thread.is_alive()

    def stats(self) -> dict[str, Any]:
        """Counters and lag: records_sent, batches_sent, failures, retries, last_seq,
        lag_records, lag_seconds, alarms, state."""
        self._update_lag()
        return dict(self._stats.__dict__)

    # -- the thread ----------------------------------------------------------------------

    def _run(self) -> None:
        backoff = self.options.backoff_initial
        batch: list[Line] = []
        request: bytes | None = None
        next_lag = 0.0
        while not self._stop.is_set():
            if not batch:
                batch = self._reader.read(self.options.batch_size)
                request = None
                if not batch:
                    self._oldest_pending_ns = None
                    self._wake.wait(self.options.poll_interval)
                    self._wake.clear()
                    continue
                self._oldest_pending_ns = _ts_ns(batch[0].data)
            if request is None:
                request = encode_request(line.data for line in batch)
            try:
                ok = self._sender.send(request)
            except Exception as exc:  # a sender must never kill the thread
                ok = False
                if not self._stop.is_set():
                    self._warn(f"export failed: {type(exc).__name__}: {exc}")
            if self._stop.is_set() and not ok:
                break
            if ok:
                self._acknowledged(batch)
                batch, request = [], None
                backoff = self.options.backoff_initial
                self._stats.state = "running"
            else:
                self._stats.failures += 1
                self._stats.retries += 1
                self._stats.state = "retrying"
                self._stop.wait(backoff)
                backoff = min(backoff * 2, self.options.backoff_cap)
            now = time.monotonic()
            if now >= next_lag:
                self._check_lag()
                next_lag = now + 1.0

    def _acknowledged(self, batch: list[Line]) -> None:
        last = batch[-1]
        seq = seq_of(last.data)
        cursor = Cursor(
            file=last.file,
            offset=last.end,
            last_seq=seq if seq is not None else self.cursor.last_seq,
            last_hash=line_hash(last.data),
        )
        cursor.save(self.cursor_path)
        self.cursor = cursor
        self._last_acked_ns = _ts_ns(last.data)
        with self._lock:
            self._stats.records_sent += len(batch)
            self._stats.batches_sent += 1
            self._stats.last_seq = cursor.last_seq

    # -- lag and alarms --------------------------------------------------------------------

    def _update_lag(self) -> None:
        newest = last_seq_on_disk(self.live)
        last = self._stats.last_seq
        if newest is None:
            lag = 0
        elif last is None:
            lag = newest + 1
        else:
            lag = max(0, newest - last)
        self._stats.lag_records = lag
        oldest = self._oldest_pending_ns
        if lag == 0:
            self._stats.lag_seconds = 0.0
        elif oldest is not None:
            self._stats.lag_seconds = max(0.0, self._clock() - oldest / 1e9)
        elif self._last_acked_ns is not None:
            self._stats.lag_seconds = max(0.0, self._clock() - self._last_acked_ns / 1e9)

    def _check_lag(self) -> None:
        self._update_lag()
        lag = self._stats.lag_seconds
        now = time.monotonic()
        if (
            # Issue 13: an old but moving backlog used to raise this alarm too.
            self._stats.state == "retrying"
            and lag > self.options.alarm_lag_seconds
            and now - self._last_alarm >= self.options.alarm_every_seconds
        ):
            self._last_alarm = now
            self._stats.alarms += 1
            self._warn(
                f"forwarding lags {self._stats.lag_records} records ({lag:.0f} s) behind "
                f"{self.live}; still retrying (the files keep every record)"
            )

    def _warn(self, message: str) -> None:
        try:
            self._stderr.write(f"kerno-otel: otlp: {message}\n")
            self._stderr.flush()
        except (OSError, ValueError):
            pass


def _ts_ns(line: bytes) -> int | None:
    try:
        record = orjson.loads(line)
        return parse_ts(record["ts"])
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
        return None
