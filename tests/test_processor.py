"""The audit pipeline end to end: emit through AuditLog, read the files back."""

from __future__ import annotations

import copy
import io
import os
import stat
import subprocess
import sys
import threading
from pathlib import Path

import orjson
import pytest
from helpers import check_chain, stream_lines, stream_records
from opentelemetry.sdk._logs import LogRecordProcessor, ReadWriteLogRecord

from kerno_otel.audit import files
from kerno_otel.audit.chain import GENESIS, KEY_ORDER, line_hash
from kerno_otel.audit.files import AuditFileError, rotated_files
from kerno_otel.audit.log import AuditLog
from kerno_otel.config import AuditConfig

REPO = Path(__file__).resolve().parent.parent


def plugin_load(name: str) -> dict[str, object]:
    return {"plugin": name, "distribution": "kerno-otel", "version": "0.1.0", "hooks": []}


#: The pipeline mode these tests run in (each test runs in both, see ``_both_pipelines``).
PIPELINE = ["process"]


@pytest.fixture(autouse=True, params=["process", "thread"])
def _both_pipelines(request: pytest.FixtureRequest) -> None:
    PIPELINE[0] = request.param


def config(tmp_path: Path, **overrides: object) -> AuditConfig:
    values: dict[str, object] = {
        "file_path": str(tmp_path / "log" / "kerno-audit.jsonl"),
        "pipeline": PIPELINE[0],
    }
    values.update(overrides)
    return AuditConfig(**values)  # type: ignore[arg-type]


def test_first_records_key_order_and_chain(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    with AuditLog(cfg, stderr=io.StringIO(), resource={"service.name": "kerno"}) as log:
        log.emit("plugin.load", details=plugin_load("procfs"))
        log.emit(
            "bpf.load",
            details={
                "program": "fd_track",
                "attach": ["syscalls:sys_exit_openat"],
                "success": True,
            },
            trace_id=0xABC,
            span_id=0xDEF,
        )
    lines = stream_lines(Path(cfg.file_path))
    records = [orjson.loads(line) for line in lines]
    assert [r["type"] for r in records] == ["audit.start", "plugin.load", "bpf.load"]
    assert [r["seq"] for r in records] == [0, 1, 2]
    assert records[0]["prev"] == GENESIS
    assert records[1]["prev"] == line_hash(lines[0])
    assert records[0]["details"]["resumed"] is False
    assert list(records[2]) == [k for k in KEY_ORDER]
    assert records[2]["trace_id"] == "0" * 29 + "abc"
    assert records[2]["span_id"] == "0" * 13 + "def"
    assert list(records[1]) == [k for k in KEY_ORDER if k not in ("trace_id", "span_id")]
    assert records[1]["actor"] == "plugins/manager"
    assert records[1]["severity"] == "INFO"
    assert records[1]["outcome"] == "success"
    assert records[1]["resource"] == {"service.name": "kerno"}
    assert check_chain(lines) == []


def test_files_are_private(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    with AuditLog(cfg, stderr=io.StringIO()) as log:
        log.emit("plugin.load", details=plugin_load("x"))
    live = Path(cfg.file_path)
    assert stat.S_IMODE(live.stat().st_mode) == 0o600
    assert stat.S_IMODE(live.parent.stat().st_mode) == 0o700


def test_symlinked_log_path_is_refused(tmp_path: Path) -> None:
    (tmp_path / "log").mkdir()
    target = tmp_path / "elsewhere.jsonl"
    target.write_bytes(b"")
    live = tmp_path / "log" / "kerno-audit.jsonl"
    live.symlink_to(target)
    with pytest.raises(AuditFileError) as info:
        AuditLog(config(tmp_path), stderr=io.StringIO())
    assert (
        str(info.value) == f"{live}: is a symbolic link; refusing to write the audit log through it"
    )
    assert target.read_bytes() == b""


def test_redaction_happens_before_the_file(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    with AuditLog(cfg, stderr=io.StringIO()) as log:
        log.emit(
            "auth.failure",
            details={
                "endpoint": "/metrics",
                "reason": "token_missing",
                "remote_ip": "203.0.113.9",
                "suppressed": 0,
            },
            outcome="failure",
        )
        log.emit(
            "bpf.load",
            details={
                "program": "fd_track",
                "attach": [],
                "success": False,
                "error": "denied for pid=4242 at /home/alice/bcc from 10.1.2.3 "
                "key sk-abcdefghijklmnopqrstu",
            },
            outcome="failure",
        )
    # The details only: a hash elsewhere in a line may contain "4242" by chance.
    text = str([r["details"] for r in stream_records(Path(cfg.file_path))])
    for raw in ("203.0.113.9", "4242", "alice", "10.1.2.3", "sk-abcdefghijklmnopqrstu"):
        assert raw not in text
    records = stream_records(Path(cfg.file_path))
    assert records[1]["details"]["remote_ip"] == "[REDACTED:ip]"
    assert "pid=[REDACTED:pid]" in records[2]["details"]["error"]
    assert "/home/[REDACTED:path]" in records[2]["details"]["error"]


def test_invalid_record_becomes_audit_loss_without_values(tmp_path: Path) -> None:
    err = io.StringIO()
    cfg = config(tmp_path)
    with AuditLog(cfg, stderr=err) as log:
        log.emit(
            "plugin.load",
            details={
                "plugin": "x",
                "distribution": "d",
                "version": "1",
                "hooks": [],
                "secret_thing": "hunter2",
            },
        )
        log.emit("no.such_type", actor="x/y", details={"token": "hunter2"})
        log.emit("plugin.load", details=plugin_load("after"))
        stats = log.stats()
    records = stream_records(Path(cfg.file_path))
    assert [r["type"] for r in records] == [
        "audit.start",
        "audit.loss",
        "audit.loss",
        "plugin.load",
    ]
    first, second = records[1]["details"], records[2]["details"]
    assert first["reason"] == "validation_failed"
    assert first["count"] == 1
    assert first["types"] == {"plugin.load": 1}
    assert first["after_seq"] == 0
    assert "additionalProperties" in first["rule"]
    # An unknown type is counted, never named: its name may be what carries a value.
    assert (second["types"], second["count"]) == ({}, 1)
    assert second["rule"] == "(unknown type): /type: not an event type of this log"
    assert "hunter2" not in Path(cfg.file_path).read_text()
    assert "hunter2" not in err.getvalue()
    assert err.getvalue().count("record rejected, not written") == 2
    assert stats["validation_failures"] == 2
    assert check_chain(stream_lines(Path(cfg.file_path))) == []


def test_resume_continues_seq_and_chain(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    with AuditLog(cfg, stderr=io.StringIO()) as log:
        log.emit("plugin.load", details=plugin_load("a"))
    with AuditLog(cfg, stderr=io.StringIO()) as log:
        log.emit("plugin.load", details=plugin_load("b"))
    lines = stream_lines(Path(cfg.file_path))
    records = [orjson.loads(line) for line in lines]
    assert [r["seq"] for r in records] == [0, 1, 2, 3]
    assert records[2]["type"] == "audit.start"
    assert records[2]["details"]["resumed"] is True
    assert records[2]["details"]["last_seq"] == 1
    assert records[2]["details"]["last_hash"] == line_hash(lines[1])
    assert check_chain(lines) == []


@pytest.mark.parametrize("compress", [False, True])
def test_rotation_under_concurrent_emitters_loses_and_duplicates_nothing(
    tmp_path: Path, compress: bool
) -> None:
    cfg = config(tmp_path, max_size_mb=0.05, compress=compress)
    threads, per_thread = 4, 1500
    with AuditLog(cfg, stderr=io.StringIO()) as log:

        def work(t: int) -> None:
            for i in range(per_thread):
                log.emit("plugin.load", details=plugin_load(f"t{t}-{i}"))

        workers = [threading.Thread(target=work, args=(t,)) for t in range(threads)]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
    live = Path(cfg.file_path)
    files = rotated_files(live)
    assert len(files) >= 5
    assert all(p.name.endswith(".gz") for p in files) == compress
    lines = stream_lines(live)
    assert check_chain(lines) == []
    records = [orjson.loads(line) for line in lines]
    names = [r["details"]["plugin"] for r in records if r["type"] == "plugin.load"]
    assert sorted(names) == sorted(f"t{t}-{i}" for t in range(threads) for i in range(per_thread))
    # every rotated-to file opens with audit.rotate naming the file before it
    import gzip

    for older, newer in zip(files, [*files[1:], live], strict=True):
        data = newer.read_bytes()
        if newer.name.endswith(".gz"):
            data = gzip.decompress(data)
        first = orjson.loads(data.split(b"\n", 1)[0])
        assert first["type"] == "audit.rotate"
        assert first["details"]["old_file"] == older.name.removesuffix(".gz")
        assert first["details"]["reason"] == "size"
    # per-thread order is kept
    for t in range(threads):
        mine = [n for n in names if n.startswith(f"t{t}-")]
        assert mine == [f"t{t}-{i}" for i in range(per_thread)]
    for path in files:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_time_rotation(tmp_path: Path) -> None:
    cfg = config(tmp_path, rotate_interval=1.0)
    with AuditLog(cfg, stderr=io.StringIO()) as log:
        log.emit("plugin.load", details=plugin_load("a"))
        import time

        time.sleep(1.1)  # rotate_interval is real time: waiting it out is the thing tested
        log.emit("plugin.load", details=plugin_load("b"))
    live = Path(cfg.file_path)
    assert len(rotated_files(live)) == 1
    records = stream_records(live)
    assert [r["type"] for r in records] == [
        "audit.start",
        "plugin.load",
        "audit.rotate",
        "plugin.load",
    ]
    assert records[2]["details"]["reason"] == "time"


def test_flush_forces_fsync_before_the_interval(tmp_path: Path) -> None:
    import time

    cfg = config(tmp_path, fsync_interval_ms=60_000)
    with AuditLog(cfg, stderr=io.StringIO()) as log:
        log.flush()
        before = log.stats()["fsyncs"]
        log.emit("plugin.load", details=plugin_load("durable"))
        start = time.monotonic()
        assert log.flush(timeout=10) is True
        took = time.monotonic() - start
        after = log.stats()["fsyncs"]
        # read back through another descriptor: the line is in the file
        assert b'"durable"' in Path(cfg.file_path).read_bytes()
    assert after == before + 1
    assert took < 30  # far below the 60 s group-commit interval


def test_fsync_always_syncs_every_emit(tmp_path: Path) -> None:
    cfg = config(tmp_path, fsync="always")
    with AuditLog(cfg, stderr=io.StringIO()) as log:
        log.flush()
        before = log.stats()["fsyncs"]
        for i in range(5):
            log.emit("plugin.load", details=plugin_load(f"p{i}"))
        after = log.stats()["fsyncs"]
    assert after - before == 5


_CHILD = r"""
import sys
from kerno_otel.audit.log import AuditLog
from kerno_otel.config import AuditConfig
config = AuditConfig(
    file_path=sys.argv[1], fsync="never", queue_size=1 << 20, pipeline=sys.argv[2]
)
log = AuditLog(config, stderr=sys.stderr)
big = "x" * 20000
i = 0
print("ready", flush=True)
while True:
    log.emit("bpf.load", details={"program": f"p{i}", "attach": [big], "success": True})
    i += 1
"""


def test_kill_9_mid_write_then_resume(tmp_path: Path) -> None:
    """A real SIGKILL of a writing process; the next start repairs and continues the chain."""
    import signal
    import time

    live = tmp_path / "log" / "kerno-audit.jsonl"
    torn_seen = 0
    for attempt in range(8):
        child = subprocess.Popen(
            [sys.executable, "-c", _CHILD, str(live), PIPELINE[0]],
            stdout=subprocess.PIPE,
            env={**os.environ, "PYTHONPATH": str(REPO)},
        )
        assert child.stdout is not None
        assert child.stdout.readline() == b"ready\n"
        time.sleep(0.2 + 0.05 * attempt)  # where the kill lands: the thing under test
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
        # In process mode the killed writer's worker finishes the log first (it holds
        # the writer lock until then): only what it leaves behind counts as torn.
        os.close(files.lock_stream(live))
        # A kill between a rotation's rename and the new file's open leaves no live file:
        # the next start resumes from the newest rotated file (also under test here).
        data = live.read_bytes() if live.exists() else b""
        torn_seen += bool(data) and not data.endswith(b"\n")
        err = io.StringIO()
        with AuditLog(config(tmp_path), stderr=err) as log:
            log.emit("plugin.load", details=plugin_load(f"after-{attempt}"))
        assert check_chain(stream_lines(live)) == []
    if torn_seen == 0:
        # The kills all landed between writes; tear one for certain: a child that
        # dies by SIGKILL right after writing half a line.
        half = b'{"v":"1","seq":999999,"ts":"2026-11-27T18:00:00.0'
        subprocess.run(
            [
                sys.executable,
                "-c",
                "import os,sys,signal; fd=os.open(sys.argv[1], os.O_WRONLY|os.O_APPEND);"
                "os.write(fd, sys.argv[2].encode()); os.kill(os.getpid(), signal.SIGKILL)",
                str(live),
                half.decode(),
            ],
            check=False,
        )
        assert not live.read_bytes().endswith(b"\n")
    err = io.StringIO()
    with AuditLog(config(tmp_path), stderr=err) as log:
        log.emit("plugin.load", details=plugin_load("final"))
    records = stream_records(live)
    assert check_chain(stream_lines(live)) == []
    recovers = [r for r in records if r["type"] == "audit.recover"]
    assert recovers, "no torn tail was ever repaired"
    last = recovers[-1]["details"]
    aside = live.parent / last["set_aside"]
    assert aside.exists() and aside.stat().st_size == last["bytes"]
    assert stat.S_IMODE(aside.stat().st_mode) == 0o600
    assert records[-1]["details"]["plugin"] == "final"


def test_details_that_cannot_be_redacted_become_audit_loss(tmp_path: Path) -> None:
    err = io.StringIO()
    cfg = config(tmp_path)
    cyclic: dict[str, object] = {"plugin": "x", "distribution": "d", "version": "1"}
    cyclic["hooks"] = [cyclic]
    with AuditLog(cfg, stderr=err) as log:
        log.emit("plugin.load", details=cyclic)
    records = stream_records(Path(cfg.file_path))
    assert [r["type"] for r in records] == ["audit.start", "audit.loss"]
    assert records[1]["details"]["rule"].startswith("plugin.load: /details: cannot be redacted (")
    assert "record rejected, not written: plugin.load: /details: cannot be redacted" in (
        err.getvalue()
    )


class _Spy(LogRecordProcessor):
    """Another processor on the provider, as an OpenTelemetry user would add one."""

    def __init__(self) -> None:
        self.seen: list[dict[str, object]] = []

    def on_emit(self, log_record: ReadWriteLogRecord) -> None:
        self.seen.append(copy.deepcopy(dict(log_record.log_record.attributes or {})))

    def shutdown(self) -> None:
        pass

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return True


_RAW = "peer 10.1.2.3 pid=4242 key sk-ant-api03-abcdefghijklmnopqrstuvwxyz0123"


def test_other_processors_and_exporters_never_see_raw_values(tmp_path: Path) -> None:
    """Redaction happens before anything else on the provider sees a record: a spy
    processor, and the SDK's own batch processor + OTLP exporter to a loopback receiver."""
    from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter
    from opentelemetry.sdk._logs.export import BatchLogRecordProcessor
    from otlp_receivers import GrpcReceiver

    receiver = GrpcReceiver().start()
    spy = _Spy()
    try:
        with AuditLog(config(tmp_path), stderr=io.StringIO()) as log:
            log.provider.add_log_record_processor(spy)
            exporter = OTLPLogExporter(endpoint=f"127.0.0.1:{receiver.port}", insecure=True)
            log.provider.add_log_record_processor(BatchLogRecordProcessor(exporter))
            details = {"program": "fd_track", "attach": [], "success": False, "error": _RAW}
            log.emit("bpf.load", details=details, outcome="failure")
            # Refused (an unknown field): the raw value must not reach the others either.
            log.emit("bpf.load", details={**details, "extra": _RAW})
            assert log.flush(timeout=30)
            assert log.provider.force_flush(30_000)
        exported = b"".join(request.SerializeToString() for request in receiver.requests)
    finally:
        receiver.stop()
    clean = "peer [REDACTED:ip] pid=[REDACTED:pid] key [REDACTED:secret]"
    assert [seen["kerno.audit.details"] for seen in spy.seen] == [
        {**details, "error": clean},
        {},
    ]
    assert len(receiver.requests) >= 1
    assert clean.encode() in exported
    for raw in ("10.1.2.3", "4242", "sk-ant-api03"):
        assert raw.encode() not in exported
        assert raw not in repr(spy.seen)
    written = Path(config(tmp_path).file_path).read_text()
    assert clean in written and "10.1.2.3" not in written


def test_records_are_cleaned_on_the_emitting_thread_once_another_processor_joins(
    tmp_path: Path,
) -> None:
    """Process mode leaves cleaning to the worker's clean stage only while nothing else
    on the provider would see a record; thread mode always cleans on the emitting thread.
    Where cleaning happened shows in the emitting process's own redaction counts."""
    details = {"program": "p", "attach": [], "success": False, "error": "from 10.1.2.3"}
    with AuditLog(config(tmp_path), stderr=io.StringIO()) as log:
        here = log._processor.cleaner.redactor.counts
        log.emit("bpf.load", details=details)
        assert log.flush(timeout=30)
        before = here.get("ip", 0)
        log.provider.add_log_record_processor(_Spy())
        log.emit("bpf.load", details=details)
        assert log.flush(timeout=30)
        after = here.get("ip", 0)
        total = log.stats()["redactions"]["ip"]
    assert (before, after) == ((0, 1) if PIPELINE[0] == "process" else (1, 2))
    assert total == 2
    written = Path(config(tmp_path).file_path).read_text()
    assert written.count("from [REDACTED:ip]") == 2 and "10.1.2.3" not in written


class _Tricky(str):
    def __hash__(self) -> int:
        raise RuntimeError("hash")

    def __eq__(self, other: object) -> bool:
        raise RuntimeError("eq")


_SECRET = "sk-ABCDEFGHIJKLMNOPQRSTUVWX"


def test_a_refused_record_shows_other_processors_nothing_of_its_fields(tmp_path: Path) -> None:
    """Any field of a refused record may be what made it refusable: type, actor, outcome,
    severity, ids. Other processors see a well-formed known type name at most."""
    spy = _Spy()
    seen_names: list[object] = []

    class Names(_Spy):
        def on_emit(self, log_record: ReadWriteLogRecord) -> None:
            lr = log_record.log_record
            seen_names.append((lr.event_name, lr.severity_text, lr.trace_id, lr.span_id))

    ok = plugin_load("p")
    with AuditLog(config(tmp_path), stderr=io.StringIO()) as log:
        log.provider.add_log_record_processor(spy)
        log.provider.add_log_record_processor(Names())
        log.emit(f"a.{_SECRET.lower().replace('-', '_')}", details=ok)
        log.emit("plugin.load", actor=_SECRET, details=ok)
        log.emit("plugin.load", outcome=_SECRET, details=ok)
        log.emit("plugin.load", severity=_SECRET, details=ok)
        log.emit("plugin.load", details=ok, trace_id=_SECRET)  # type: ignore[arg-type]
        log.emit("plugin.load", details=ok, span_id=_SECRET)  # type: ignore[arg-type]
        log.emit(_Tricky("plugin.load"), severity=_Tricky("INFO"), details=ok)
    assert repr(spy.seen).lower().find(_SECRET.lower()[3:]) == -1
    assert repr(seen_names).lower().find(_SECRET.lower()[3:]) == -1
    assert [names[0] for names in seen_names] == [None, *["plugin.load"] * 5, None]
    written = Path(config(tmp_path).file_path).read_text()
    assert _SECRET[3:] not in written and _SECRET.lower()[3:] not in written
    losses = [
        r for r in stream_records(Path(config(tmp_path).file_path)) if r["type"] == "audit.loss"
    ]
    assert len(losses) == 7


_HOSTILE: list[dict[str, object]] = [
    {"type": []},
    {"type": None},
    {"type": ""},
    {"type": "Evil"},
    {"severity": []},
    {"trace_id": "abc"},
    {"trace_id": -1},
    {"trace_id": 2**200},
    {"trace_id": 1, "span_id": -5},
    {"trace_id": 1, "span_id": 2**64},
]


def test_hostile_arguments_never_raise_and_each_leaves_a_valid_loss_record(
    tmp_path: Path,
) -> None:
    """Issue 11, items 6, 8 and 9: each of these used to raise, write an invalid line or
    drop without a word; now each is refused with a loss record the schema accepts."""
    from kerno_otel.records.schema import SchemaSet
    from kerno_otel.records.validate import RecordValidator

    with AuditLog(config(tmp_path), stderr=io.StringIO()) as log:
        for hostile in _HOSTILE:
            arguments: dict[str, object] = {"type": "plugin.load", **hostile}
            name = arguments.pop("type")
            log.emit(name, details=plugin_load("p"), **arguments)  # type: ignore[arg-type]
        log.emit("plugin.load", details=plugin_load("ok"), trace_id=2**127, span_id=2**63)
    lines = stream_lines(Path(config(tmp_path).file_path))
    validator = RecordValidator(SchemaSet.builtin())
    assert [validator.check(orjson.loads(line)) for line in lines] == [None] * len(lines)
    records = [orjson.loads(line) for line in lines]
    losses = [r["details"] for r in records if r["type"] == "audit.loss"]
    assert [loss["reason"] for loss in losses] == ["validation_failed"] * len(_HOSTILE)
    assert records[-1]["type"] == "plugin.load"
    assert (records[-1]["trace_id"], records[-1]["span_id"]) == (
        f"{2**127:032x}",
        f"{2**63:016x}",
    )
