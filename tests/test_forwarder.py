"""The OTLP forwarder against real loopback receivers (gRPC and HTTP): nothing lost, ever."""

from __future__ import annotations

import collections
import io
import socket
import stat
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from helpers import stream_lines
from otlp_receivers import GrpcReceiver, HttpReceiver, self_signed

from kerno_otel.audit.chain import parse_ts
from kerno_otel.audit.files import rotated_files
from kerno_otel.audit.keys import generate
from kerno_otel.audit.log import AuditLog
from kerno_otel.config import AuditConfig, CheckpointConfig, load_config
from kerno_otel.forward.cursor import Cursor
from kerno_otel.forward.forwarder import Forwarder, ForwarderOptions, make_sender

Receiver = GrpcReceiver | HttpReceiver
RECEIVERS = {"grpc": GrpcReceiver, "http": HttpReceiver}


@pytest.fixture(params=["grpc", "http"])
def protocol(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def receiver(protocol: str) -> Iterator[Receiver]:
    started = RECEIVERS[protocol]().start()
    yield started
    started.stop()


def options(receiver: Receiver, protocol: str, **overrides: Any) -> ForwarderOptions:
    values: dict[str, Any] = {
        "endpoint": receiver.endpoint,
        "protocol": protocol,
        "batch_size": 50,
        "timeout": 2.0,
        "poll_interval": 0.01,
        "backoff_initial": 0.05,
        "backoff_cap": 0.3,
    }
    values.update(overrides)
    return ForwarderOptions(**values)


def audit_log(live: Path, **overrides: Any) -> AuditLog:
    values: dict[str, Any] = {"file_path": str(live), "max_size_mb": 0.02, "compress": True}
    values.update(overrides)
    return AuditLog(AuditConfig(**values), stderr=io.StringIO())


def emit(log: AuditLog, count: int, start: int = 0) -> None:
    for i in range(start, start + count):
        log.emit("bpf.load", details={"program": f"prog{i}", "attach": ["t"], "success": True})


class WatchedSender:
    """The real sender for ``opts``, telling a waiting test how many sends began and failed."""

    def __init__(self, opts: ForwarderOptions) -> None:
        self._sender = make_sender(opts)
        self._changed = threading.Condition()
        self.calls = 0
        self.failures = 0

    def send(self, request: bytes) -> bool:
        self._count("calls")
        ok = False
        try:
            ok = self._sender.send(request)
        finally:
            if not ok:
                self._count("failures")
        return ok

    def shutdown(self) -> None:
        self._sender.shutdown()

    def _count(self, name: str) -> None:
        with self._changed:
            setattr(self, name, getattr(self, name) + 1)
            self._changed.notify_all()

    def wait_for(self, name: str, count: int, timeout: float = 30.0) -> None:
        """Return once ``count`` sends began (``calls``) or failed (``failures``)."""
        with self._changed:
            got = self._changed.wait_for(lambda: getattr(self, name) >= count, timeout)
            assert got, f"{getattr(self, name)} {name}, waited for {count}"


def counts(seqs: list[int]) -> collections.Counter[int]:
    return collections.Counter(seqs)


def test_every_record_arrives_exactly_once_and_rebuilds_byte_for_byte(
    tmp_path: Path, protocol: str, receiver: Receiver
) -> None:
    """Across rotations and gzip, checkpoints included: the received records are the file."""
    keys = generate(tmp_path / "keys")
    live = tmp_path / "log" / "kerno-audit.jsonl"
    log = audit_log(
        live, checkpoint=CheckpointConfig(key_file=str(keys.private_path), every_records=100)
    )
    forwarder = Forwarder(live, options(receiver, protocol))
    forwarder.start()
    emit(log, 400)
    log.close()
    assert forwarder.wait_caught_up(60)
    stats = forwarder.stats()
    assert forwarder.stop()
    lines = stream_lines(live)
    assert len(rotated_files(live)) >= 3
    assert any(b'"type":"audit.checkpoint"' in line for line in lines)
    assert lines == receiver.lines()
    assert log.stats()["blocked_emits"] == 0
    assert (stats["records_sent"], stats["lag_records"], stats["failures"]) == (len(lines), 0, 0)
    assert stats["last_seq"] == len(lines) - 1


def test_outage_across_rotation_and_restart_loses_nothing(tmp_path: Path, protocol: str) -> None:
    """Receiver down while the log keeps writing and rotating (and gzipping); the forwarder
    is replaced by a new one from the saved cursor during the outage; receiver back on the
    same port: every seq arrives, and none twice (every batch it kept was acknowledged)."""
    live = tmp_path / "kerno-audit.jsonl"
    receiver = RECEIVERS[protocol]().start()
    requests = receiver.requests
    log = audit_log(live)
    opts = options(receiver, protocol)
    first_sender = WatchedSender(opts)
    first = Forwarder(live, opts, sender=first_sender, stderr=io.StringIO())
    first.start()
    emit(log, 100)
    log.flush()
    assert first.wait_caught_up(60)
    acked = len(stream_lines(live)) - 1
    receiver.stop()
    emit(log, 250, start=100)
    log.flush()
    first_sender.wait_for("failures", 1)
    assert first.stop(5)
    saved = Cursor.load(Cursor.path_for(live))
    assert saved.last_seq == acked  # nothing acknowledged during the outage
    second_sender = WatchedSender(opts)
    second = Forwarder(live, opts, sender=second_sender, stderr=io.StringIO())
    second.start()
    emit(log, 50, start=350)
    second_sender.wait_for("failures", 1)  # the new forwarder ran into the outage too
    restarted = RECEIVERS[protocol](receiver.port)
    restarted.requests = requests  # one history across the outage
    restarted.start()
    try:
        log.close()
        assert second.wait_caught_up(60)
        assert second.stop()
    finally:
        restarted.stop()
    lines = stream_lines(live)
    assert len(rotated_files(live)) >= 3
    assert sorted(restarted.lines(), key=lambda b: orjson.loads(b)["seq"]) == lines
    assert log.stats()["blocked_emits"] == 0


def test_rotation_every_few_lines_with_concurrent_writers_and_a_restart(tmp_path: Path) -> None:
    """Hundreds of rotations (and gzips) while three threads write and the forwarder is
    replaced mid-stream (once it shipped some, before the writers are done): every line
    arrives, in order, with no warning; the only repeats allowed are the batch in flight
    when the first forwarder stopped."""
    live = tmp_path / "kerno-audit.jsonl"
    receiver = GrpcReceiver().start()
    log = audit_log(live, max_size_mb=0.002)
    err = io.StringIO()
    opts = options(receiver, "grpc", batch_size=7, poll_interval=0.001)
    forwarder = Forwarder(live, opts, stderr=err)
    forwarder.start()
    replaced = threading.Event()

    def work(t: int) -> None:
        for i in range(300):
            if i == 150:
                replaced.wait(30)
            log.emit("bpf.load", details={"program": f"p{t}-{i}", "attach": [], "success": True})

    threads = [threading.Thread(target=work, args=(t,)) for t in range(3)]
    for thread in threads:
        thread.start()
    receiver.wait_for_records(100)
    assert forwarder.stop()
    forwarder = Forwarder(live, opts, stderr=err)
    forwarder.start()
    replaced.set()
    for thread in threads:
        thread.join()
    log.close()
    try:
        assert forwarder.wait_caught_up(60)
        assert forwarder.stop()
    finally:
        receiver.stop()
    lines = stream_lines(live)
    assert len(rotated_files(live)) > 100
    got = receiver.lines()
    once = list(dict.fromkeys(got))
    assert once == lines
    assert len(got) - len(once) <= opts.batch_size
    said = [line for line in err.getvalue().splitlines() if " forwarding to " not in line]
    assert said == []


def test_only_an_unacknowledged_batch_is_sent_twice(tmp_path: Path) -> None:
    """The collector got a batch but its answer was lost: that batch, and only it, repeats."""
    live = tmp_path / "kerno-audit.jsonl"
    receiver = GrpcReceiver().start()
    log = audit_log(live, max_size_mb=100)
    emit(log, 200)
    log.flush()

    original = receiver.keep
    lost = {"left": 1}

    def keep_then_lose_the_answer(request: Any) -> None:
        original(request)
        if lost["left"] and len(receiver.requests) == 2:
            lost["left"] = 0
            raise RuntimeError("the answer never made it back")

    receiver.keep = keep_then_lose_the_answer  # type: ignore[method-assign]
    forwarder = Forwarder(live, options(receiver, "grpc"), stderr=io.StringIO())
    forwarder.start()
    try:
        log.close()
        assert forwarder.wait_caught_up(60)
        assert forwarder.stop()
    finally:
        receiver.stop()
    lines = stream_lines(live)
    seqs = receiver.seqs()
    repeated = sorted(seq for seq, n in counts(seqs).items() if n > 1)
    assert repeated == list(range(50, 100))  # the second batch of 50
    assert set(seqs) == set(range(len(lines)))


def test_errors_then_recovery(tmp_path: Path, protocol: str, receiver: Receiver) -> None:
    """UNAVAILABLE / HTTP 503 for a while, then the receiver recovers: all there, in order."""
    live = tmp_path / "kerno-audit.jsonl"
    receiver.fail_next = 6
    log = audit_log(live)
    forwarder = Forwarder(live, options(receiver, protocol), stderr=io.StringIO())
    forwarder.start()
    emit(log, 300)
    log.close()
    assert forwarder.wait_caught_up(60)
    assert forwarder.stop()
    assert receiver.failed == 6
    assert stream_lines(live) == receiver.lines()
    assert log.stats()["blocked_emits"] == 0


def test_stalled_receiver_does_not_block_the_writer(tmp_path: Path, protocol: str) -> None:
    """The collector holds the forwarder's first request unanswered; the writer goes on."""
    live = tmp_path / "kerno-audit.jsonl"
    receiver = RECEIVERS[protocol]().start()
    receiver.gate.clear()
    log = audit_log(live, max_size_mb=100)  # one file: stream_lines is exact while it is open
    # A timeout longer than the stall: a retried request would be received twice.
    forwarder = Forwarder(live, options(receiver, protocol, timeout=60.0), stderr=io.StringIO())
    forwarder.start()
    try:
        assert receiver.holding.wait(20)
        emit(log, 400)
        log.flush()
        stats = forwarder.stats()
        assert receiver.requests == []  # still stalled: the writer did not wait for it
        assert (stats["records_sent"], stats["lag_records"]) == (0, len(stream_lines(live)))
        receiver.gate.set()
        log.close()
        assert forwarder.wait_caught_up(60)
        assert forwarder.stop()
    finally:
        receiver.stop()
    assert log.stats()["blocked_emits"] == 0
    assert stream_lines(live) == receiver.lines()


def test_cursor_is_private_atomic_and_resumes_without_resending(tmp_path: Path) -> None:
    live = tmp_path / "kerno-audit.jsonl"
    receiver = GrpcReceiver().start()
    log = audit_log(live, max_size_mb=100)
    emit(log, 120)
    log.flush()
    forwarder = Forwarder(live, options(receiver, "grpc"))
    forwarder.start()
    assert forwarder.wait_caught_up(60)
    assert forwarder.stop()
    path = Cursor.path_for(live)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert sorted(p.name for p in live.parent.iterdir() if "cursor" in p.name) == [path.name]
    saved = orjson.loads(path.read_bytes())
    lines = stream_lines(live)
    assert saved["last_seq"] == len(lines) - 1
    assert saved["offset"] == live.stat().st_size
    emit(log, 30, start=120)
    log.close()
    again = Forwarder(live, options(receiver, "grpc"))
    again.start()
    try:
        assert again.wait_caught_up(60)
        assert again.stop()
    finally:
        receiver.stop()
    assert stream_lines(live) == receiver.lines()


def test_cursor_into_a_deleted_file_resumes_by_seq(tmp_path: Path) -> None:
    """Retention removed the file the cursor pointed into: continue from the next seq."""
    live = tmp_path / "kerno-audit.jsonl"
    receiver = GrpcReceiver().start()
    log = audit_log(live, compress=False)
    emit(log, 60)
    log.flush()
    forwarder = Forwarder(live, options(receiver, "grpc", batch_size=10))
    forwarder.start()
    assert forwarder.wait_caught_up(60)
    assert forwarder.stop()
    receiver_seen = len(receiver.lines())
    emit(log, 100, start=60)
    log.close()
    cursor = Cursor.load(Cursor.path_for(live))
    Cursor("sha256:" + "f" * 64, 12345, cursor.last_seq, cursor.last_hash).save(
        Cursor.path_for(live)
    )
    err = io.StringIO()
    again = Forwarder(live, options(receiver, "grpc"), stderr=err)
    again.start()
    try:
        assert again.wait_caught_up(60)
        assert again.stop()
    finally:
        receiver.stop()
    assert "the file the cursor points into is gone" in err.getvalue()
    assert stream_lines(live) == receiver.lines()
    assert receiver_seen == cursor.last_seq + 1  # type: ignore[operator]


def _dead_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _black_hole() -> tuple[socket.socket, list[socket.socket], threading.Event]:
    """A TCP listener that accepts and never answers; the event is set at the first accept."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    accepted: list[socket.socket] = []
    connected = threading.Event()

    def accept() -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            accepted.append(conn)
            connected.set()

    threading.Thread(target=accept, daemon=True).start()
    return server, accepted, connected


@pytest.mark.parametrize("kind", ["refused", "black_hole"])
def test_dead_collector_never_makes_stop_hang(tmp_path: Path, protocol: str, kind: str) -> None:
    live = tmp_path / "kerno-audit.jsonl"
    log = audit_log(live)
    emit(log, 20)
    log.close()
    hole = None
    if kind == "refused":
        port = _dead_port()
    else:
        hole, accepted, connected = _black_hole()
        port = hole.getsockname()[1]
    endpoint = f"http://127.0.0.1:{port}" + ("/v1/logs" if protocol == "http" else "")
    opts = ForwarderOptions(endpoint=endpoint, protocol=protocol, timeout=30.0, poll_interval=0.01)
    sender = WatchedSender(opts)
    forwarder = Forwarder(live, opts, sender=sender, stderr=io.StringIO())
    forwarder.start()
    sender.wait_for("calls", 1)  # stopped while a send is under way
    if hole is not None:
        assert connected.wait(20)  # ... and its request went to a peer that never answers
    started = time.monotonic()
    forwarder.stop(timeout=2.0)
    assert time.monotonic() - started < 10.0  # bounded by the 2 s given, with slack for load
    assert forwarder.stats()["records_sent"] == 0
    assert Cursor.load(Cursor.path_for(live)) == Cursor()
    if hole is not None:
        hole.close()
        for conn in accepted:
            conn.close()


def test_lag_alarm_on_stderr_rate_limited(tmp_path: Path) -> None:
    """An hour behind by the injected clock: one alarm, however many failures follow."""
    live = tmp_path / "kerno-audit.jsonl"
    log = audit_log(live)
    emit(log, 30)
    log.close()
    lines = stream_lines(live)
    oldest_ns = parse_ts(orjson.loads(lines[0])["ts"])
    now = oldest_ns / 1e9 + 3600.0
    err = io.StringIO()
    opts = ForwarderOptions(
        endpoint=f"http://127.0.0.1:{_dead_port()}",
        timeout=0.2,
        backoff_initial=0.05,
        backoff_cap=0.1,
        alarm_lag_seconds=60.0,
        alarm_every_seconds=3600.0,
    )
    sender = WatchedSender(opts)
    forwarder = Forwarder(live, opts, sender=sender, stderr=err, clock=lambda: now)
    forwarder.start()
    sender.wait_for("failures", 3)
    stats = forwarder.stats()
    forwarder.stop(2.0)
    lag = max(0.0, now - oldest_ns / 1e9)
    alarms = [line for line in err.getvalue().splitlines() if "forwarding lags" in line]
    assert alarms == [
        f"kerno-otel: otlp: forwarding lags {len(lines)} records ({lag:.0f} s) behind {live}; "
        "still retrying (the files keep every record)"
    ]
    assert (stats["lag_records"], stats["lag_seconds"]) == (len(lines), lag)
    assert stats["state"] == "retrying"


def test_standard_otel_variables_reach_the_exporter(
    tmp_path: Path, protocol: str, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With the embedded default endpoint, ``OTEL_EXPORTER_OTLP_LOGS_ENDPOINT`` decides."""
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_LOGS_ENDPOINT", receiver.endpoint)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_HEADERS", "x-tenant=audit")
    section = dict(load_config(None, {}).section("otlp"), protocol=protocol)
    opts = ForwarderOptions.from_section(section, poll_interval=0.01)
    assert opts.endpoint is None
    live = tmp_path / "kerno-audit.jsonl"
    log = audit_log(live)
    emit(log, 10)
    log.close()
    forwarder = Forwarder(live, opts)
    forwarder.start()
    assert forwarder.wait_caught_up(60)
    assert forwarder.stop()
    assert stream_lines(live) == receiver.lines()


def test_gzip_compression(tmp_path: Path, protocol: str, receiver: Receiver) -> None:
    live = tmp_path / "kerno-audit.jsonl"
    log = audit_log(live)
    emit(log, 60)
    log.close()
    forwarder = Forwarder(live, options(receiver, protocol, compression="gzip"))
    forwarder.start()
    assert forwarder.wait_caught_up(60)
    assert forwarder.stop()
    assert stream_lines(live) == receiver.lines()
    if protocol == "http":
        assert receiver.gzipped == len(receiver.requests)


def test_tls_with_the_configured_ca(
    tmp_path: Path, protocol: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``certificate_file`` is the CA the collector's certificate is checked against, even
    where ``REQUESTS_CA_BUNDLE`` names the system bundle (requests would let it win)."""
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", "/etc/ssl/certs/ca-certificates.crt")
    cert, key = self_signed(tmp_path / "tls")
    receiver = RECEIVERS[protocol](tls=(cert, key)).start()
    live = tmp_path / "kerno-audit.jsonl"
    log = audit_log(live)
    emit(log, 20)
    log.close()
    forwarder = Forwarder(live, options(receiver, protocol, certificate_file=str(cert)))
    forwarder.start()
    try:
        assert forwarder.wait_caught_up(60)
        assert forwarder.stop()
    finally:
        receiver.stop()
    assert stream_lines(live) == receiver.lines()


def test_config_values_become_options() -> None:
    section = {
        "enabled": True,
        "endpoint": "https://collector:4317",
        "protocol": "http",
        "headers": {"authorization": "Bearer x"},
        "timeout": "3s",
        "compression": "gzip",
        "certificate_file": "/ca.pem",
        "client_key_file": None,
        "client_certificate_file": None,
        "batch_size": 100,
    }
    opts = ForwarderOptions.from_section(section)
    assert (opts.endpoint, opts.protocol, opts.timeout, opts.compression, opts.batch_size) == (
        "https://collector:4317",
        "http",
        3.0,
        "gzip",
        100,
    )
    assert dict(opts.headers) == {"authorization": "Bearer x"}
