"""``kerno-otel bpf verify``: load every registered program, read it for a while, report."""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, TextIO

from kerno_otel.audit.log import AuditLog
from kerno_otel.bpf.loader import BPFLoader
from kerno_otel.config import load_config
from kerno_otel.daemon.plugins import PluginHost, record_failures


@dataclass(frozen=True)
class ProgramReport:
    """One program's line in the report."""

    program: str
    loaded: bool
    tracepoints: tuple[str, ...]
    load_ms: float
    #: Events or samples counted while reading (None: not loaded, or its counts failed).
    events: int | None
    lost: int | None
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "program": self.program,
            "loaded": self.loaded,
            "tracepoints": list(self.tracepoints),
            "load_ms": round(self.load_ms, 1),
            "events": self.events,
            "lost": self.lost,
        }
        if self.error is not None:
            out["error"] = self.error
        return out


def verify(
    config_path: str | None,
    *,
    read_s: float,
    env: Mapping[str, str],
    stderr: TextIO,
    stop: threading.Event | None = None,
) -> tuple[list[ProgramReport], str]:
    """Load every program plugins register (whatever ``bpf.programs`` says), read, close.

    Each attempt is a ``bpf.load`` record in the config's audit log. Returns the
    reports (errors already redacted) and the audit log's path. Raises
    ConfigError, PluginLoadError and AuditFileError for the CLI to show.
    """
    config = load_config(config_path, env)
    host = PluginHost(config.section("plugins"), env, stderr)
    host.load()
    event_types = host.event_types()
    redaction = host.redaction_rules()
    with AuditLog(
        config.audit, event_types=event_types, redaction_rules=redaction, stderr=stderr
    ) as log:
        programs = host.named("register_bpf_programs")
        record_failures(log, host.failures)
        loader = BPFLoader(log, stderr)
        try:
            results = loader.load(programs)
            before = loader.stats()
            (stop or threading.Event()).wait(read_s)
            after = loader.stats()
        finally:
            loader.close()
        reports = []
        for result in results:
            first, last = before.get(result.name), after.get(result.name)
            events = lost = None
            if first is not None and last is not None:
                events, lost = last.events - first.events, last.lost - first.lost
            error = None
            if result.error is not None:
                error, _ = log.redactor.redact_text(result.error)
            reports.append(
                ProgramReport(
                    result.name,
                    result.success,
                    result.tracepoints,
                    result.load_s * 1000.0,
                    events,
                    lost,
                    error,
                )
            )
    return reports, config.audit.file_path
