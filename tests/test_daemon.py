"""The daemon as a real process: plugins, signals, reloads, panics, failing plugins."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import orjson
import pytest
from helpers import check_chain, fake_distribution, stream_lines, stream_records

CRASHER = """
import threading
from kerno_otel.hookspecs import hookimpl

@hookimpl
def daemon_startup(context):
    def boom():
        raise RuntimeError("boom: password=hunter2 at /home/alice/x")
    threading.Thread(target=boom).start()
"""

BROKEN = """
from kerno_otel.hookspecs import hookimpl

@hookimpl
def daemon_startup(context):
    raise ValueError("this plugin is broken")
"""

BAD_IMPORT = "raise ImportError('missing dependency')\n"

T = TypeVar("T")


class Daemon:
    """A ``kerno-otel run`` child process and its audit log.

    Every record the daemon writes is echoed on its stderr (``audit.stderr``)
    once it is in the file; a thread reads stderr as it comes, so a test waits
    for the record or line it needs instead of polling the file.
    """

    def __init__(self, tmp: Path, config: str, plugins: str, site: Path | None = None) -> None:
        self.log = tmp / "log" / "kerno-audit.jsonl"
        self.config = tmp / "kerno.yaml"
        self.config.write_text(f"audit:\n  file_path: {self.log}\n" + config)
        env = {k: v for k, v in os.environ.items() if not k.startswith("KERNO_")}
        env["KERNO_OTEL_PLUGINS"] = plugins
        # From the environment, not the file: the reload tests rewrite the file.
        env["KERNO_AUDIT_STDERR"] = "true"
        if site is not None:
            env["PYTHONPATH"] = os.pathsep.join([str(site), *filter(None, [env.get("PYTHONPATH")])])
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "kerno_otel", "run", "--config", str(self.config)],
            stderr=subprocess.PIPE,
            text=True,
            env=env,
            cwd=tmp,
        )
        self.stderr_lines: list[str] = []
        self._changed = threading.Condition()
        self._closed = False  # stderr reached its end
        self._looked = 0  # stderr lines expect() has looked at
        self._reader = threading.Thread(target=self._read_stderr, daemon=True)
        self._reader.start()
        self.expect("kerno-otel: audit log ")

    def _read_stderr(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            with self._changed:
                self.stderr_lines.append(line)
                self._changed.notify_all()
        with self._changed:
            self._closed = True
            self._changed.notify_all()

    def _wait(self, found: Callable[[], T | None], timeout: float, what: str) -> T:
        """``found()``'s answer once it has one (called as stderr grows); fails at its end."""
        answer: T | None = None

        def ready() -> bool:
            nonlocal answer
            answer = found()
            return answer is not None or self._closed

        with self._changed:
            self._changed.wait_for(ready, timeout)
            if answer is None:
                raise AssertionError(f"{what} not seen on stderr; got {self.stderr_lines!r}")
            return answer

    def expect(self, prefix: str, timeout: float = 20) -> str:
        """The next stderr line that starts with ``prefix``."""

        def found() -> str | None:
            for index in range(self._looked, len(self.stderr_lines)):
                if self.stderr_lines[index].startswith(prefix):
                    self._looked = index + 1
                    return self.stderr_lines[index]
            return None

        return self._wait(found, timeout, repr(prefix))

    def wait_for(self, type_name: str, count: int = 1, timeout: float = 20) -> list[dict[str, Any]]:
        """The first ``count`` (or more) records of ``type_name``, once they are in the file."""

        def found() -> list[dict[str, Any]] | None:
            written = [orjson.loads(line) for line in self.stderr_lines if line.startswith("{")]
            matching = [r for r in written if r["type"] == type_name]
            return matching if len(matching) >= count else None

        return self._wait(found, timeout, f"{count} {type_name} records")

    def records(self) -> list[dict[str, Any]]:
        return [orjson.loads(line) for line in stream_lines(self.log)]

    def wait_exit(self, timeout: float = 30) -> int:
        """The exit code, once the process ended and all of its stderr was read."""
        code = self.proc.wait(timeout=timeout)
        self._reader.join(timeout)
        return code

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.wait_exit()


@pytest.fixture
def started() -> Iterator[list[Daemon]]:
    daemons: list[Daemon] = []
    yield daemons
    for daemon in daemons:
        if daemon.proc.poll() is None:
            daemon.proc.kill()
            daemon.proc.wait()


def validate(log: Path) -> None:
    files = sorted(str(p) for p in log.parent.glob("kerno-audit*.jsonl*"))
    result = subprocess.run(
        [sys.executable, "-m", "kerno_otel", "audit", "validate", *files],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert check_chain(stream_lines(log)) == []


def test_start_and_sigterm(tmp_path: Path, started: list[Daemon]) -> None:
    daemon = Daemon(tmp_path, "", "lifecycle")
    started.append(daemon)
    daemon.wait_for("daemon.start")
    assert daemon.stop() == 0
    records = daemon.records()
    assert [r["type"] for r in records] == [
        "audit.start",
        "plugin.load",
        "daemon.start",
        "daemon.stop",
    ]
    assert records[1]["details"] == {
        "plugin": "lifecycle",
        "distribution": "kerno-otel",
        "version": "0.1.0",
        "hooks": ["config_reload", "daemon_panic", "daemon_shutdown", "daemon_startup"],
    }
    assert (
        records[2]["details"]["config_path"]
        == str(tmp_path).split("/")[0] + "/" + str(tmp_path).split("/")[1]
    )
    assert records[2]["details"]["plugins"] == [{"name": "lifecycle", "version": "0.1.0"}]
    assert records[3]["details"]["reason"] == "signal"
    assert records[3]["details"]["uptime_s"] > 0
    validate(daemon.log)


def test_sighup_reload_records_the_diff(tmp_path: Path, started: list[Daemon]) -> None:
    daemon = Daemon(tmp_path, "doctor:\n  interval: 60s\n", "lifecycle")
    started.append(daemon)
    daemon.wait_for("daemon.start")
    daemon.config.write_text(
        f"audit:\n  file_path: {daemon.log}\n  max_size_mb: 50\n"
        "doctor:\n  interval: 15s\nhttp:\n  bearer_token: n3w-secret-value\n"
    )
    daemon.proc.send_signal(signal.SIGHUP)
    reload = daemon.wait_for("config.reload")[0]
    assert reload["actor"] == "config/SIGHUP"
    assert reload["outcome"] == "success"
    details = reload["details"]
    assert details["source"] == "SIGHUP"
    assert details["uid"] == os.getuid()
    assert details["changed_fields"] == [
        "audit.max_size_mb",
        "doctor.interval",
        "http.bearer_token",
    ]
    assert details["applied"] == ["doctor.interval", "http.bearer_token"]
    assert details["restart_required"] == ["audit.max_size_mb"]
    assert details["changes"] == [
        {"field": "audit.max_size_mb", "before": 100.0, "after": 50.0},
        {"field": "doctor.interval", "before": "60s", "after": "15s"},
        {"field": "http.bearer_token", "before": None, "after": "***"},
    ]
    assert "n3w-secret-value" not in daemon.log.read_text()

    # An invalid file changes nothing and says why.
    daemon.config.write_text(f"audit:\n  file_path: {daemon.log}\ndoctor:\n  interval: soon\n")
    daemon.proc.send_signal(signal.SIGHUP)
    failed = daemon.wait_for("config.reload", 2)[1]
    assert failed["outcome"] == "failure"
    assert failed["details"]["changed_fields"] == []
    assert failed["details"]["error"] == (
        # The file's path is reduced to its top directory, as in any free text.
        f"/{daemon.config.parts[1]}/[REDACTED:path]:4: doctor.interval: "
        "expected a duration like 30s, 5m or 24h, got 'soon'"
    )
    # ... and the old (reloaded) config is still the one in force: the next
    # valid reload diffs against it.
    daemon.config.write_text(
        f"audit:\n  file_path: {daemon.log}\n  max_size_mb: 50\n"
        "doctor:\n  interval: 20s\nhttp:\n  bearer_token: n3w-secret-value\n"
    )
    daemon.proc.send_signal(signal.SIGHUP)
    third = daemon.wait_for("config.reload", 3)[2]
    assert third["details"]["changes"] == [
        {"field": "doctor.interval", "before": "15s", "after": "20s"}
    ]
    assert daemon.stop() == 0
    validate(daemon.log)


def test_panic_digest_and_no_traceback_in_the_log(tmp_path: Path, started: list[Daemon]) -> None:
    site = tmp_path / "site"
    fake_distribution(site, "kerno-test-crash", "1.0", {"kerno_test_crash": CRASHER})
    daemon = Daemon(tmp_path, "", "lifecycle,crash", site)
    started.append(daemon)
    code = daemon.wait_exit()
    stderr = "".join(daemon.stderr_lines)
    assert code == 70
    assert "Traceback (most recent call last)" in stderr
    assert "RuntimeError: boom" in stderr
    panic = [r for r in daemon.records() if r["type"] == "daemon.panic"]
    assert len(panic) == 1
    assert panic[0]["details"]["exception_type"] == "RuntimeError"
    digest = panic[0]["details"]["panic_digest"]
    assert f"digest {digest}" in stderr
    text = daemon.log.read_text()
    assert "Traceback" not in text and "boom" not in text and "hunter2" not in text
    validate(daemon.log)


def test_a_failing_plugin_does_not_stop_the_daemon(tmp_path: Path, started: list[Daemon]) -> None:
    site = tmp_path / "site"
    fake_distribution(
        site,
        "kerno-test-bad",
        "2.0",
        {"kerno_test_broken": BROKEN, "kerno_test_noimport": BAD_IMPORT},
    )
    daemon = Daemon(tmp_path, "", "lifecycle,broken,noimport", site)
    started.append(daemon)
    daemon.wait_for("daemon.start")
    # Still running after the failures: its main loop answers a reload.
    daemon.proc.send_signal(signal.SIGHUP)
    daemon.wait_for("config.reload")
    assert daemon.proc.poll() is None
    assert daemon.stop() == 0
    errors = [r["details"] for r in daemon.records() if r["type"] == "plugin.error"]
    assert [(e["plugin"], e["hook"], e["error_type"], e["distribution"]) for e in errors] == [
        ("noimport", "load", "ImportError", "kerno-test-bad"),
        ("broken", "daemon_startup", "ValueError", "kerno-test-bad"),
    ]
    stderr = "".join(daemon.stderr_lines)
    assert (
        "kerno-otel: plugin 'broken' (kerno-test-bad 2.0) failed in daemon_startup: "
        "ValueError: this plugin is broken\n"
    ) in stderr
    validate(daemon.log)


def test_strict_plugins_fail_the_start(tmp_path: Path) -> None:
    site = tmp_path / "site"
    fake_distribution(site, "kerno-test-bad", "2.0", {"kerno_test_noimport": BAD_IMPORT})
    config = tmp_path / "kerno.yaml"
    config.write_text(f"audit:\n  file_path: {tmp_path / 'a.jsonl'}\nplugins:\n  strict: true\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("KERNO_")}
    env["KERNO_OTEL_PLUGINS"] = "noimport"
    env["PYTHONPATH"] = str(site)
    result = subprocess.run(
        [sys.executable, "-m", "kerno_otel", "run", "--config", str(config)],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert result.returncode == 2
    assert result.stderr.splitlines()[-1] == (
        "Error: plugin 'noimport' (kerno-test-bad 2.0) failed in load: ImportError: "
        "missing dependency "
        "(plugins.strict is on)"
    )


def test_strict_and_a_raising_daemon_startup_exit_2_with_one_line(tmp_path: Path) -> None:
    # Issue 13, 3: this used to be a daemon.panic, a traceback and exit 70.
    site = tmp_path / "site"
    fake_distribution(site, "kerno-test-bad", "2.0", {"kerno_test_broken": BROKEN})
    log = tmp_path / "log" / "kerno-audit.jsonl"
    config = tmp_path / "kerno.yaml"
    config.write_text(f"audit:\n  file_path: {log}\nplugins:\n  strict: true\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("KERNO_")}
    env["KERNO_OTEL_PLUGINS"] = "lifecycle,broken"
    env["PYTHONPATH"] = str(site)
    result = subprocess.run(
        [sys.executable, "-m", "kerno_otel", "run", "--config", str(config)],
        capture_output=True,
        text=True,
        env=env,
        check=False,
        timeout=60,
    )
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert result.stderr.splitlines()[-1] == (
        "Error: plugin 'broken' (kerno-test-bad 2.0) failed in daemon_startup: "
        "ValueError: this plugin is broken (plugins.strict is on)"
    )
    records = stream_records(log)
    types = [r["type"] for r in records]
    assert "daemon.panic" not in types
    errors = [r["details"] for r in records if r["type"] == "plugin.error"]
    assert [(e["plugin"], e["hook"], e["error_type"]) for e in errors] == [
        ("broken", "daemon_startup", "ValueError")
    ]
    # The plugins that had started were stopped: lifecycle's daemon.stop is in the log.
    assert types[-1] == "daemon.stop"
    validate(log)


def test_metrics_behind_the_token_in_a_real_daemon(tmp_path: Path, started: list[Daemon]) -> None:
    import http.client

    daemon = Daemon(
        tmp_path,
        "http:\n  listen: 127.0.0.1:0\n  bearer_token: t0ken-for-tests\n",
        "auth,lifecycle",
    )
    started.append(daemon)
    line = daemon.expect("kerno-otel: http listening on ")
    host, _, port = line.split()[-1].rpartition(":")

    def get(path: str, token: str | None) -> tuple[int, bytes]:
        conn = http.client.HTTPConnection(host, int(port), timeout=10)
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        conn.request("GET", path, headers=headers)
        response = conn.getresponse()
        body = response.read()
        conn.close()
        return response.status, body

    assert get("/metrics", None)[0] == 401
    assert get("/metrics", "wrong")[0] == 401
    status, body = get("/metrics", "t0ken-for-tests")
    assert status == 200
    assert b"# TYPE kerno_audit_records_written_total counter" in body
    assert get("/healthz", None) == (200, b"ok\n")
    assert get("/readyz", None) == (200, b"ready\n")
    assert daemon.stop() == 0
    failures = [r["details"] for r in daemon.records() if r["type"] == "auth.failure"]
    assert [(f["endpoint"], f["reason"], f["remote_ip"]) for f in failures] == [
        ("/metrics", "token_missing", "[REDACTED:ip]"),
        ("/metrics", "token_mismatch", "[REDACTED:ip]"),
    ]
    assert "t0ken-for-tests" not in daemon.log.read_text()
    validate(daemon.log)


def test_a_flood_of_bad_requests_is_folded(tmp_path: Path, started: list[Daemon]) -> None:
    import http.client

    daemon = Daemon(
        tmp_path,
        "http:\n  listen: 127.0.0.1:0\n  bearer_token: t0ken-for-tests\n"
        "auth:\n  failure_interval: 1s\n",
        "auth,lifecycle",
    )
    started.append(daemon)
    line = daemon.expect("kerno-otel: http listening on ")
    host, _, port = line.split()[-1].rpartition(":")
    total = 10_000
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    for i in range(total):  # bounded, loopback only
        token = {"Authorization": "Bearer nope"} if i % 2 else {}
        conn.request("GET", "/metrics", headers=token)
        response = conn.getresponse()
        response.read()
        assert response.status == 401
    conn.close()
    assert daemon.stop() == 0
    failures = [r["details"] for r in daemon.records() if r["type"] == "auth.failure"]
    assert len(failures) <= 2 * 2 * 30  # 2 reasons, at most 2 records per 1 s window
    by_reason = {"token_missing": 0, "token_mismatch": 0}
    for f in failures:
        by_reason[f["reason"]] += 1 + f["suppressed"]
    assert by_reason == {"token_missing": total // 2, "token_mismatch": total // 2}
    validate(daemon.log)


def test_plugin_error_lines_on_stderr_are_redacted(tmp_path: Path, started: list[Daemon]) -> None:
    leaky = (
        "from kerno_otel.hookspecs import hookimpl\n\n"
        "@hookimpl\n"
        "def daemon_startup(context):\n"
        "    raise RuntimeError('cannot reach 10.9.8.7 with token=s3cr3tvalue')\n"
    )
    site = tmp_path / "site"
    fake_distribution(site, "kerno-test-leaky", "1.0", {"kerno_test_leaky": leaky})
    daemon = Daemon(tmp_path, "", "leaky", site)
    started.append(daemon)
    line = daemon.expect("kerno-otel: plugin 'leaky'")
    assert line == (
        "kerno-otel: plugin 'leaky' (kerno-test-leaky 1.0) failed in daemon_startup: "
        "RuntimeError: cannot reach [REDACTED:ip] with token=[REDACTED:secret]\n"
    )
    assert daemon.stop() == 0
    validate(daemon.log)
