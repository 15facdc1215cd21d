"""The daemon: config, plugins, the audit log, signals, reloads and panics, in one loop.

Signals are taken synchronously (``sigtimedwait``) on the main thread, with
SIGTERM/SIGINT/SIGHUP blocked in every thread: that gives each reload the uid
of whoever sent the SIGHUP, and no handler ever runs in the middle of an
audit write. An unhandled exception anywhere (main loop or any thread)
becomes ``daemon.panic``: the traceback goes to stderr, only its SHA-256
digest into the log, and the process exits 70.
"""

from __future__ import annotations

import hashlib
import os
import signal
import threading
import time
import traceback
from collections.abc import Mapping
from typing import TextIO

from kerno_otel.audit.log import AuditLog
from kerno_otel.bpf.loader import BPFLoader
from kerno_otel.config import Config, ConfigError, diff, is_live, load_config
from kerno_otel.daemon.plugins import (
    PluginFailure,
    PluginHost,
    PluginLoadError,
    record_failures,
)
from kerno_otel.hookspecs import ConfigDiff, DaemonContext
from kerno_otel.telemetry import Telemetry, read_settings, start_telemetry

#: Exit code after a panic (EX_SOFTWARE).
PANIC_EXIT = 70
#: Exit code when a plugin stopped the daemon with ``request_stop("error")`` (the HTTP
#: server could not bind its port, say): like node_exporter, a daemon that cannot do
#: its job does not exit 0.
ERROR_EXIT = 1

_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


def traceback_digest(exc: BaseException) -> tuple[str, str]:
    """(the traceback text, ``sha256:<hex>`` of it)."""
    text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    return text, "sha256:" + hashlib.sha256(text.encode("utf-8", "replace")).hexdigest()


class Daemon:
    """One run of ``kerno-otel run``."""

    def __init__(
        self,
        config_path: str | None,
        *,
        stderr: TextIO,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self._config_path = config_path
        self._stderr = stderr
        self._env = os.environ if env is None else env
        self.config: Config = load_config(config_path, self._env)
        # Read now: a bad OTEL_* variable or telemetry key is a config error (exit 2).
        self.telemetry_settings = read_settings(self.config.section("telemetry"), self._env)
        self.host = PluginHost(self.config.section("plugins"), self._env, stderr)
        self._stop_reason: str | None = None
        self._thread_panic: BaseException | None = None
        self._started = time.monotonic()
        #: Config keys plugins declared secret (masked in reload diffs).
        self._secrets: frozenset[str] = frozenset()
        #: How many of ``host.failures`` are in the log already.
        self._recorded = 0
        self._context: DaemonContext | None = None
        self._bpf: BPFLoader | None = None

    def _record_failures(self, log: AuditLog, failures: list[PluginFailure]) -> None:
        record_failures(log, failures)
        self._recorded += len(failures)

    def request_stop(self, reason: str = "request") -> None:
        """Ask the main loop to stop (from a plugin or another thread)."""
        if self._stop_reason is None:
            self._stop_reason = reason

    def run(self, duration: float | None = None) -> int:
        """Run until a signal, ``request_stop`` or ``duration`` seconds; the exit code."""
        signal.pthread_sigmask(signal.SIG_BLOCK, _SIGNALS)
        previous_hook = threading.excepthook
        threading.excepthook = self._on_thread_exception
        try:
            return self._run(duration)
        finally:
            threading.excepthook = previous_hook
            signal.pthread_sigmask(signal.SIG_UNBLOCK, _SIGNALS)

    def _run(self, duration: float | None) -> int:
        self.host.load()
        self._secrets = self.host.config_secrets()
        event_types = self.host.event_types()
        rules = self.host.redaction_rules()
        log = AuditLog(
            self.config.audit, event_types=event_types, redaction_rules=rules, stderr=self._stderr
        )
        self._stderr.write(f"kerno-otel: audit log {self.config.audit.file_path}\n")
        self._stderr.flush()
        for info in self.host.plugins:
            log.emit(
                "plugin.load",
                details={
                    "plugin": info.name,
                    "distribution": info.distribution,
                    "version": info.version,
                    "hooks": info.hooks,
                },
            )
        telemetry = self._telemetry(log)
        try:
            context = self._start(log, telemetry)
        except PluginLoadError:
            # plugins.strict (issue 13): a plugin failed after the log opened. The failure
            # is recorded, the plugins that started are stopped, and the CLI exits 2 with
            # one line, as for a plugin that fails to load; not a panic.
            self._refuse_start(log)
            telemetry.shutdown()
            raise
        try:
            self._loop(context, log, duration)
            if self._thread_panic is not None:
                raise self._thread_panic
            uptime = time.monotonic() - self._started
            reason = self._stop_reason or "request"
            self._record_failures(
                log,
                self.host.call("daemon_shutdown", context=context, reason=reason, uptime_s=uptime),
            )
            self._close_bpf()
            log.close()
            # After the log: the last metric export holds the final counts.
            telemetry.shutdown()
            stats = log.stats()
            self._stderr.write(
                f"kerno-otel: stopped ({reason}); {stats['records_written']} records written, "
                f"{sum(stats['records_dropped'].values())} dropped\n"
            )
            return ERROR_EXIT if reason == "error" else 0
        except Exception as exc:
            self._close_bpf()
            return self._panic(context, log, exc)
        finally:
            telemetry.shutdown()

    def _telemetry(self, log: AuditLog) -> Telemetry:
        """Providers with the audit log's resource; spans scrubbed by its redactor."""
        serve = bool(self.config.section("http").get("enabled", True))
        try:
            return start_telemetry(
                self.telemetry_settings, log, stderr=self._stderr, serve_metrics=serve
            )
        except ConfigError:  # an exporter refusing its OTEL_* settings
            log.close()
            raise

    def _start(self, log: AuditLog, telemetry: Telemetry) -> DaemonContext:
        """Record the plugins' load, collect what they register, call ``daemon_startup``."""
        self._record_failures(log, self.host.failures)
        context = DaemonContext(
            audit=log,
            config=self.config,
            request_stop=self.request_stop,
            plugins=tuple(self.host.plugins),
            routes=tuple(self.host.routes()),
            sources=self.host.named("register_sources"),
            rules=self.host.named("register_doctor_rules"),
            rule_plugins=self.host.owners.get("register_doctor_rules", {}),
            source_plugins=self.host.owners.get("register_sources", {}),
            sinks=self.host.named("register_sinks"),
            ai_providers=self.host.named("register_ai_providers"),
            telemetry=telemetry,
        )
        context.analyzer = self.host.first(
            "make_analyzer",
            audit=log,
            config=self.config,
            providers=context.ai_providers,
            telemetry=telemetry,
        )
        programs = self.host.named("register_bpf_programs")
        self._record_failures(log, self.host.failures[self._recorded :])
        self._context = context
        # BPF programs load before daemon_startup, so the first doctor cycle reads them.
        self._bpf = BPFLoader(log, self._stderr, telemetry)
        self._bpf.load_selected(self.config, programs)
        self._record_failures(log, self.host.call("daemon_startup", context=context))
        return context

    def _refuse_start(self, log: AuditLog) -> None:
        """After a strict failure: record it, stop the plugins that started, close the log."""
        self._record_failures(log, self.host.failures[self._recorded :])
        if self._context is not None:
            self.host.strict = False  # the others' shutdown failures are recorded, not raised
            failures = self.host.call(
                "daemon_shutdown",
                context=self._context,
                reason="error",
                uptime_s=time.monotonic() - self._started,
            )
            self._record_failures(log, failures)
        self._close_bpf()
        log.close()

    def _close_bpf(self) -> None:
        if self._bpf is not None:
            self._bpf.close()

    def _loop(self, context: DaemonContext, log: AuditLog, duration: float | None) -> None:
        deadline = None if duration is None else time.monotonic() + duration
        while self._stop_reason is None and self._thread_panic is None:
            timeout = 0.2
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    self._stop_reason = "request"
                    break
                timeout = min(timeout, left)
            info = signal.sigtimedwait(_SIGNALS, timeout)
            if info is None:
                continue
            if info.si_signo == signal.SIGHUP:
                self.reload(context, log, source="SIGHUP", uid=info.si_uid)
            else:
                self._stop_reason = "signal"
                self._stderr.write(
                    f"kerno-otel: {signal.Signals(info.si_signo).name} received, stopping\n"
                )

    def reload(self, context: DaemonContext, log: AuditLog, *, source: str, uid: int) -> bool:
        """Re-read the config; apply it if valid, else keep the old one. Records either way.

        One ``kerno.config.reload`` span covers it: the ``config.reload`` record the
        lifecycle plugin writes carries its ids.
        """
        telemetry = context.telemetry
        with telemetry.tracer.start_as_current_span(
            "kerno.config.reload", attributes={"kerno.config.source": source}
        ) as span:
            applied = self._reload(context, log, source=source, uid=uid)
            span.set_attribute("kerno.config.outcome", "success" if applied else "failure")
        telemetry.instruments.reloads.add(
            1, {"kerno.config.outcome": "success" if applied else "failure"}
        )
        return applied

    def _reload(self, context: DaemonContext, log: AuditLog, *, source: str, uid: int) -> bool:
        old = self.config
        path = old.source or (self._config_path or "")
        try:
            new = load_config(self._config_path, self._env)
        except ConfigError as exc:
            self._stderr.write(f"kerno-otel: reload refused, old config kept: {exc}\n")
            failures = self.host.call(
                "config_reload",
                context=context,
                old=old,
                new=None,
                diff=None,
                source=source,
                path=path,
                uid=uid,
                error=str(exc),
            )
            self._record_failures(log, failures)
            return False
        changes = diff(old, new, self._secrets)
        keys = tuple(key for key, _, _ in changes)
        result = ConfigDiff(
            changed=keys,
            applied=tuple(k for k in keys if is_live(k)),
            restart_required=tuple(k for k in keys if not is_live(k)),
            changes=tuple(changes),
        )
        self.config = new
        context.config = new
        self._stderr.write(
            f"kerno-otel: config reloaded ({len(result.applied)} applied, "
            f"{len(result.restart_required)} need a restart)\n"
        )
        failures = self.host.call(
            "config_reload",
            context=context,
            old=old,
            new=new,
            diff=result,
            source=source,
            path=new.source or path,
            uid=uid,
            error=None,
        )
        self._record_failures(log, failures)
        return True

    def _on_thread_exception(self, args: threading.ExceptHookArgs) -> None:
        if args.exc_value is not None and self._thread_panic is None:
            self._thread_panic = args.exc_value

    def _panic(self, context: DaemonContext, log: AuditLog, exc: BaseException) -> int:
        text, digest = traceback_digest(exc)
        self._stderr.write(text)
        self._stderr.write(f"kerno-otel: panic ({type(exc).__name__}); digest {digest}\n")
        self.host.strict = False  # already ending: a panic hook's failure is recorded, not raised
        try:
            failures = self.host.call(
                "daemon_panic",
                context=context,
                exception_type=type(exc).__name__,
                panic_digest=digest,
            )
            # A plugin failing in its panic hook is in the log like any other failure.
            self._record_failures(log, failures)
        finally:
            log.close()
        return PANIC_EXIT


def run(
    config_path: str | None,
    *,
    duration: float | None,
    stderr: TextIO,
    env: Mapping[str, str] | None = None,
) -> int:
    """``kerno-otel run``: the exit code. Config and plugin errors raise (the CLI shows them)."""
    return Daemon(config_path, stderr=stderr, env=env).run(duration)
