"""``audit.pipeline: process``: the audit worker as a real child process, stopped and killed."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import orjson
import pytest
from helpers import check_chain, stream_lines, stream_records

from kerno_otel.audit.files import AuditFileError
from kerno_otel.audit.log import AuditLog
from kerno_otel.audit.worker.client import WorkerTransport
from kerno_otel.config import AuditConfig

REPO = Path(__file__).resolve().parent.parent


def plugin_load(name: str) -> dict[str, object]:
    return {"plugin": name, "distribution": "kerno-otel", "version": "0.1.0", "hooks": []}


def config(tmp_path: Path, **overrides: object) -> AuditConfig:
    values: dict[str, object] = {
        "file_path": str(tmp_path / "log" / "kerno-audit.jsonl"),
        "pipeline": "process",
    }
    values.update(overrides)
    return AuditConfig(**values)  # type: ignore[arg-type]


def transport(log: AuditLog) -> WorkerTransport:
    worker = log._processor.transport
    assert isinstance(worker, WorkerTransport)
    return worker


def worker_pid(log: AuditLog) -> int:
    """The clean stage's: stopping it stops the intake, killing it loses the worker."""
    return transport(log)._procs[0].pid


def test_records_cross_to_the_worker_redacted_and_chained(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    err = io.StringIO()
    with AuditLog(cfg, stderr=err) as log:
        worker = transport(log)
        pid = worker_pid(log)
        assert pid != os.getpid()
        for i in range(500):
            log.emit("plugin.load", details=plugin_load(f"p{i}"))
        log.emit(
            "bpf.load",
            details={
                "program": "fd_track",
                "attach": [],
                "success": False,
                "error": "open /home/alice/.ssh/id_rsa failed for pid=4242 from 10.1.2.3",
            },
            outcome="failure",
        )
        assert log.flush(timeout=30)
        stats = log.stats()
    assert stats["records_written"] == 502  # audit.start + 501
    assert stats["redactions"] == {"path": 1, "pid": 1, "ip": 1}
    lines = stream_lines(Path(cfg.file_path))
    assert check_chain(lines) == []
    error = orjson.loads(lines[-1])["details"]["error"]
    assert error == "open /home/[REDACTED:path] failed for pid=[REDACTED:pid] from [REDACTED:ip]"
    # the worker is gone (and waited for) once the log is closed
    assert [proc.returncode for proc in worker._procs] == [0, 0]


def test_stopped_worker_blocks_emitters_then_everything_is_written(tmp_path: Path) -> None:
    """SIGSTOP the worker: past queue_size the emitter waits, nothing is lost."""
    cfg = config(tmp_path, queue_size=64)
    with AuditLog(cfg, stderr=io.StringIO()) as log:
        pid = worker_pid(log)
        os.kill(pid, signal.SIGSTOP)
        done = threading.Event()
        total = 64 + 20_000  # well past the parent's bound and the 1 MiB pipe

        def emit_all() -> None:
            for i in range(total):
                log.emit("plugin.load", details=plugin_load(f"p{i}"))
            done.set()

        thread = threading.Thread(target=emit_all)
        try:
            thread.start()
            assert not done.wait(1.0), "the emitter ran on while the worker was stopped"
        finally:
            os.kill(pid, signal.SIGCONT)
        thread.join(60)
        assert done.is_set()
        assert log.flush(timeout=60)
        assert log.stats()["blocked_emits"] >= 1
    records = stream_records(Path(cfg.file_path))
    names = [r["details"]["plugin"] for r in records if r["type"] == "plugin.load"]
    assert names == [f"p{i}" for i in range(total)]
    assert not [r for r in records if r["type"] == "audit.loss"]


def test_stopped_worker_with_overflow_drop_records_the_loss(tmp_path: Path) -> None:
    cfg = config(tmp_path, queue_size=64, on_overflow="drop")
    with AuditLog(cfg, stderr=io.StringIO()) as log:
        pid = worker_pid(log)
        os.kill(pid, signal.SIGSTOP)
        try:
            for i in range(20_000):
                log.emit("plugin.load", details=plugin_load(f"p{i}"))
        finally:
            os.kill(pid, signal.SIGCONT)
        assert log.flush(timeout=60)
        stats = log.stats()
    records = stream_records(Path(cfg.file_path))
    written = sum(1 for r in records if r["type"] == "plugin.load")
    losses = [r["details"] for r in records if r["type"] == "audit.loss"]
    assert losses and all(loss["reason"] == "queue_full" for loss in losses)
    lost = sum(loss["count"] for loss in losses)
    assert written + lost == 20_000
    assert lost > 0
    assert all(set(loss["types"]) == {"plugin.load"} for loss in losses)
    assert stats["records_dropped"]["queue_full"] == lost
    assert check_chain(stream_lines(Path(cfg.file_path))) == []


def test_killed_worker_is_recorded_and_the_log_goes_on(tmp_path: Path) -> None:
    """SIGKILL the worker mid-stream: an audit.loss (worker_lost) and an unbroken chain."""
    cfg = config(tmp_path)
    err = io.StringIO()
    with AuditLog(cfg, stderr=err) as log:
        for i in range(200):
            log.emit("plugin.load", details=plugin_load(f"before{i}"))
        assert log.flush(timeout=30)
        pid = worker_pid(log)
        os.kill(pid, signal.SIGSTOP)
        for i in range(300):  # held here or in the pipe; none confirmed durable
            log.emit("plugin.load", details=plugin_load(f"during{i}"))
        os.kill(pid, signal.SIGKILL)
        assert transport(log).recovered.wait(30)
        for i in range(50):
            log.emit("plugin.load", details=plugin_load(f"after{i}"))
        assert log.flush(timeout=30)
    records = stream_records(Path(cfg.file_path))
    assert check_chain(stream_lines(Path(cfg.file_path))) == []
    names = [r["details"]["plugin"] for r in records if r["type"] == "plugin.load"]
    assert names[:200] == [f"before{i}" for i in range(200)]
    assert names[-50:] == [f"after{i}" for i in range(50)]
    losses = [r["details"] for r in records if r["type"] == "audit.loss"]
    during = [n for n in names if n.startswith("during")]
    # Records the stopped worker had taken (in its pipe) are counted lost; those still
    # waiting in this process were handed to the in-process pipeline, in order.
    assert len(during) + sum(loss["count"] for loss in losses) == 300
    assert during == [f"during{i}" for i in range(300 - len(during), 300)]
    assert all(loss["reason"] == "worker_lost" for loss in losses)
    assert "audit worker stopped unexpectedly (signal 9)" in err.getvalue()


def test_unencodable_details_become_audit_loss_without_values(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    err = io.StringIO()
    with AuditLog(cfg, stderr=err) as log:
        log.emit("plugin.load", details={**plugin_load("x"), "hooks": {"secret-set-value"}})
        log.emit("plugin.load", details=plugin_load("ok"))
    records = stream_records(Path(cfg.file_path))
    assert [r["type"] for r in records] == ["audit.start", "audit.loss", "plugin.load"]
    assert records[1]["details"]["reason"] == "validation_failed"
    assert records[1]["details"]["rule"].startswith("plugin.load: /details/hooks")
    assert "secret-set-value" not in Path(cfg.file_path).read_text()
    assert "secret-set-value" not in err.getvalue()


def test_open_errors_come_back_from_the_worker(tmp_path: Path) -> None:
    (tmp_path / "log").mkdir(mode=0o700)
    (tmp_path / "log" / "kerno-audit.jsonl").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(AuditFileError, match="is a symbolic link; refusing"):
        AuditLog(config(tmp_path), stderr=io.StringIO())


def test_second_writer_on_one_stream_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import kerno_otel.audit.files as files

    real = files.lock_stream
    monkeypatch.setattr(files, "lock_stream", lambda live, wait_s=30.0: real(live, 0.5))
    cfg = config(tmp_path, pipeline="thread")
    with AuditLog(cfg, stderr=io.StringIO()) as log:
        log.emit("plugin.load", details=plugin_load("first"))
        with pytest.raises(AuditFileError, match="another process is writing"):
            AuditLog(cfg, stderr=io.StringIO())
    with AuditLog(cfg, stderr=io.StringIO()) as log:  # free again once closed
        log.emit("plugin.load", details=plugin_load("second"))
    assert check_chain(stream_lines(Path(cfg.file_path))) == []


_PARENT = r"""
import os, signal, sys
from kerno_otel.audit.log import AuditLog
from kerno_otel.config import AuditConfig
log = AuditLog(AuditConfig(file_path=sys.argv[1], pipeline="process"))
transport = log._processor.transport
worker = transport._procs[0].pid
os.kill(worker, signal.SIGSTOP)  # nothing gets written before this process dies
for i in range(int(sys.argv[2])):
    details = {"plugin": f"p{i}", "distribution": "d", "version": "1", "hooks": []}
    log.emit("plugin.load", details=details)
assert transport.drain(60)  # everything is in the worker's pipe
print(worker, flush=True)
sys.stdin.readline()
"""


def test_parent_killed_the_worker_still_writes_all_it_was_given(tmp_path: Path) -> None:
    live = tmp_path / "log" / "kerno-audit.jsonl"
    parent = subprocess.Popen(
        [sys.executable, "-c", _PARENT, str(live), "3000"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert parent.stdout is not None
    worker = int(parent.stdout.readline())
    assert stream_lines(live) == [] or len(stream_lines(live)) == 1  # at most audit.start
    parent.kill()
    parent.wait()
    os.kill(worker, signal.SIGCONT)
    # The worker finishes in order and lets go of the stream; the next writer waits for it.
    with AuditLog(AuditConfig(file_path=str(live), pipeline="thread"), stderr=io.StringIO()):
        pass
    records = stream_records(live)
    names = [r["details"]["plugin"] for r in records if r["type"] == "plugin.load"]
    assert names == [f"p{i}" for i in range(3000)]
    assert check_chain(stream_lines(live)) == []
    assert not [r for r in records if r["type"] in ("audit.loss", "audit.recover")]


def test_worker_ignores_the_terminal_signals(tmp_path: Path) -> None:
    """Ctrl-C or a SIGTERM to the whole process group must not cut the log short:
    the worker's life follows its parent's pipe."""
    cfg = config(tmp_path)
    with AuditLog(cfg, stderr=io.StringIO()) as log:
        pid = worker_pid(log)
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            os.kill(pid, signum)
        # A round trip through the worker: it has run (and taken its signals) since.
        assert log.flush(timeout=30)
        log.emit("plugin.load", details=plugin_load("still-here"))
        assert log.flush(timeout=30)
        assert [proc.poll() for proc in transport(log)._procs] == [None, None]
        assert not transport(log).recovered.is_set()
    assert orjson.loads(stream_lines(Path(cfg.file_path))[-1])["type"] == "plugin.load"


def test_worker_does_not_inherit_secrets_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KERNO_AI_API_KEY", "sk-should-not-travel-0123456789")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_HEADERS", "authorization=Bearer abcdefgh12345678")
    monkeypatch.setenv("GITHUB_TOKEN", "ghp_notforthechild")
    monkeypatch.setenv("KERNO_TEST_HARMLESS_PATHLIKE", "x")
    with AuditLog(config(tmp_path), stderr=io.StringIO()) as log:
        environ = Path(f"/proc/{worker_pid(log)}/environ").read_bytes().split(b"\0")
    names = {item.split(b"=", 1)[0] for item in environ if item}
    assert b"PATH" in names or not os.environ.get("PATH")
    assert not {b"KERNO_AI_API_KEY", b"OTEL_EXPORTER_OTLP_HEADERS", b"GITHUB_TOKEN"} & names
    assert b"KERNO_TEST_HARMLESS_PATHLIKE" not in names  # all of KERNO_* stays behind


def test_an_emitter_blocked_when_the_worker_dies_hands_its_record_to_the_fallback(
    tmp_path: Path,
) -> None:
    """Every record is written or counted: the one an emitter was blocked on at queue_size
    goes to the in-process sealer, not nowhere."""
    from helpers import wait_until

    cfg = config(tmp_path, queue_size=16, fsync="never")
    with AuditLog(cfg, stderr=io.StringIO()) as log:
        worker = transport(log)
        seal = worker._procs[1]
        os.kill(seal.pid, signal.SIGSTOP)
        emitter = threading.Thread(
            target=lambda: [
                log.emit("plugin.load", details=plugin_load(f"r{i}")) for i in range(40)
            ]
        )
        emitter.start()
        assert wait_until(lambda: worker.counters.blocked_emits >= 1)
        os.kill(seal.pid, signal.SIGKILL)
        emitter.join(30)
        assert not emitter.is_alive()
        assert log.flush(timeout=30)
    records = stream_records(Path(cfg.file_path))
    names = {r["details"].get("plugin") for r in records if r["type"] == "plugin.load"}
    missing = [i for i in range(40) if f"r{i}" not in names]
    lost = sum(r["details"]["count"] for r in records if r["type"] == "audit.loss")
    assert lost >= len(missing)  # every record is written or counted
    assert missing == list(range(len(missing)))  # only ones the dead worker held, in order


def test_records_emitted_while_closing_are_written_or_counted(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    log = AuditLog(cfg, stderr=io.StringIO())
    started = threading.Barrier(5)
    emitted = [0] * 4

    def emit_on(slot: int) -> None:
        started.wait()
        after_close = 0  # each thread goes on for a while after close() returned
        while after_close < 50:
            after_close += log.closed
            log.emit("plugin.load", details=plugin_load(f"{slot}-{emitted[slot]}"))
            emitted[slot] += 1

    threads = [threading.Thread(target=emit_on, args=(slot,)) for slot in range(4)]
    for thread in threads:
        thread.start()
    started.wait()
    log.close()
    for thread in threads:
        thread.join(60)
    written = sum(1 for r in stream_records(Path(cfg.file_path)) if r["type"] == "plugin.load")
    closed = log.stats()["records_dropped"].get("closed", 0)
    assert written + closed == sum(emitted)
    assert closed > 0


def test_an_ill_formed_type_name_is_counted_in_the_queue_loss_never_named(
    tmp_path: Path,
) -> None:
    cfg = config(tmp_path, queue_size=16, on_overflow="drop")
    with AuditLog(cfg, stderr=io.StringIO()) as log:
        clean = transport(log)._procs[0]
        os.kill(clean.pid, signal.SIGSTOP)  # nothing is taken in: the queue fills
        try:
            for i in range(40):
                log.emit("plugin.load", details=plugin_load(f"p{i}"))
            log.emit("Not A Type", details={})
        finally:
            os.kill(clean.pid, signal.SIGCONT)
        assert log.flush(timeout=30)
    records = stream_records(Path(cfg.file_path))
    losses = [r["details"] for r in records if r["type"] == "audit.loss"]
    written = sum(1 for r in records if r["type"] == "plugin.load")
    assert [loss["reason"] for loss in losses] == ["queue_full"]
    assert losses[0]["count"] == 41 - written
    assert losses[0]["types"] == {"plugin.load": 40 - written}
