"""``kerno-otel doctor``: one cycle outside the daemon, audited and traced like the daemon's."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import TextIO

from kerno_otel.audit.log import AuditLog
from kerno_otel.bpf.loader import BPFLoader
from kerno_otel.config import Config, load_config
from kerno_otel.daemon.plugins import PluginHost, record_failures
from kerno_otel.doctor.engine import CycleResult, build_doctor, settings
from kerno_otel.telemetry import Telemetry, read_settings, start_telemetry


def analyzer_config(config: Config, ai: bool | None) -> Config | None:
    """The config to make the analyzer with, or None when no analysis is wanted.

    ``ai`` is ``--ai`` (True), ``--no-ai`` (False) or neither (None: ``ai.enabled``
    decides). ``--ai`` asks for the analyzer for this run, whatever ``ai.enabled`` says.
    """
    enabled = bool(config.section("ai").get("enabled"))
    if not (enabled if ai is None else ai):
        return None
    if enabled:
        return config
    sections = {**config.sections, "ai": {**config.section("ai"), "enabled": True}}
    return dataclasses.replace(config, sections=sections)


def diagnose(
    config_path: str | None,
    *,
    duration: str | None,
    env: Mapping[str, str],
    stderr: TextIO,
    ai: bool | None = None,
) -> tuple[CycleResult, str]:
    """One cycle, audited and traced like the daemon's; (result, audit log path).

    Opens the audit log from the config, loads the plugins (sources, rules,
    sinks, and the analyzer through ``make_analyzer`` when ``ai`` or
    ``ai.enabled`` asks for one), runs one cycle and closes the log. With
    telemetry on (``OTEL_*`` or the ``telemetry`` section, docs/telemetry.md)
    the cycle is traced and its metrics exported once, before this returns.
    Raises ConfigError, PluginLoadError and AuditFileError for the CLI to show.
    """
    config = load_config(config_path, env)
    settings(config, duration)  # a bad duration stops us before the log opens
    # As in `run`: a bad OTEL_* variable or telemetry key stops us before the log opens.
    wanted_telemetry = read_settings(config.section("telemetry"), env)
    host = PluginHost(config.section("plugins"), env, stderr)
    host.load()
    event_types = host.event_types()
    redaction = host.redaction_rules()
    telemetry = Telemetry.off()
    try:
        with AuditLog(
            config.audit, event_types=event_types, redaction_rules=redaction, stderr=stderr
        ) as log:
            telemetry = start_telemetry(wanted_telemetry, log, stderr=stderr, once=True)
            result = _cycle(log, config, host, telemetry, duration=duration, ai=ai, stderr=stderr)
    finally:
        # After the log closes: the one metric export holds the final counts.
        telemetry.shutdown()
    return result, config.audit.file_path


def _cycle(
    log: AuditLog,
    config: Config,
    host: PluginHost,
    telemetry: Telemetry,
    *,
    duration: str | None,
    ai: bool | None,
    stderr: TextIO,
) -> CycleResult:
    # Loading BPF programs is audited here as in the daemon (bpf.load per attempt, each
    # a kerno.bpf.load span), before the sources are built: they read what loaded.
    bpf = BPFLoader(log, stderr, telemetry)
    bpf.load_selected(config, host.named("register_bpf_programs"))
    doctor = build_doctor(
        log,
        config,
        sources=host.named("register_sources"),
        rules=host.named("register_doctor_rules"),
        sinks=host.named("register_sinks"),
        duration=duration,
        telemetry=telemetry,
        rule_plugins=host.owners.get("register_doctor_rules"),
        source_plugins=host.owners.get("register_sources"),
        stderr=stderr,
    )
    wanted = analyzer_config(config, ai)
    if wanted is not None:
        # No analysis is better than no diagnosis: a plugin failing here is a plugin.error.
        doctor.analyzer = host.first(
            "make_analyzer",
            audit=log,
            config=wanted,
            providers=host.named("register_ai_providers"),
            telemetry=telemetry,
        )
    # Plugins that failed (loading, registering, making the analyzer) are on
    # stderr already; the log records them too, as the daemon does.
    record_failures(log, host.failures)
    try:
        result = doctor.run_cycle()
    finally:
        doctor.close()  # repeats of a plugin.error still folded (none in one cycle)
        bpf.close()
        close = getattr(doctor.analyzer, "close", None)
        if callable(close):
            close()
    assert result is not None  # no stop event: the window always completes
    return result
