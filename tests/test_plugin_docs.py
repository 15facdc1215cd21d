"""docs/plugins.md: every Python example is a plugin that loads, registers and runs."""

from __future__ import annotations

import io
import re
import types
from pathlib import Path

from helpers import stream_records

from kerno_otel import AuditConfig, AuditLog, Config, PluginInfo, RuleInput, Signals
from kerno_otel.daemon.plugins import PluginHost
from kerno_otel.hookspecs import DaemonContext

DOC = Path(__file__).resolve().parent.parent / "docs" / "plugins.md"


def examples() -> list[str]:
    return re.findall(r"```python\n(.*?)```", DOC.read_text(encoding="utf-8"), re.S)


def test_every_example_is_a_working_plugin(tmp_path: Path) -> None:
    err = io.StringIO()
    host = PluginHost({}, {}, err)
    for number, source in enumerate(examples(), 1):
        module = types.ModuleType(f"example_{number}")
        exec(compile(source, f"{DOC}:example {number}", "exec"), module.__dict__)
        host.register_object(module, PluginInfo(module.__name__, "docs", "0"))
    host.pm.check_pending()
    live = tmp_path / "kerno-audit.jsonl"
    log = AuditLog(
        AuditConfig(file_path=str(live)),
        event_types=host.event_types(),
        redaction_rules=host.redaction_rules(),
        stderr=io.StringIO(),
    )
    context = DaemonContext(
        audit=log,
        config=Config(),
        request_stop=lambda reason: None,
        plugins=tuple(host.plugins),
        routes=tuple(args[0] for _, args in host.collect("register_http_routes")),
        sources=host.named("register_sources"),
        rules=host.named("register_doctor_rules"),
        sinks=host.named("register_sinks"),
        ai_providers=host.named("register_ai_providers"),
    )
    context.analyzer = host.first(
        "make_analyzer",
        audit=log,
        config=context.config,
        providers=context.ai_providers,
        telemetry=context.telemetry,
    )
    try:
        assert host.call("daemon_startup", context=context) == []
        assert host.call("daemon_shutdown", context=context, reason="request", uptime_s=1.0) == []
    finally:
        log.close()

    # What the examples registered works as the contract says.
    signals = Signals(1.0, {"acme.widgets": 150.0})
    findings = [f for rule in context.rules.values() for f in rule(RuleInput(signals, {}))]
    assert {f.rule for f in findings} >= {"always_fine", "too_many_widgets"}
    assert context.ai_providers["acme"].complete("why", None, "m", 10, 0.0)[0]
    assert context.analyzer is not None
    analysis = context.analyzer.analyze("cycle-1", findings, signals)
    assert analysis.provider == "shrug"
    assert [r.path for r in context.routes] == ["/acme/status"]
    assert [r.handler("/acme/status") for r in context.routes] == [(200, "text/plain", b"ok\n")]
    assert host.failures == []
    assert err.getvalue() == ""
    exports = [r for r in stream_records(live) if r["type"] == "acme.export"]
    assert [r["details"] for r in exports] == [{"destination": "s3", "records": 0}]
