"""The plugin host (kerno_otel/daemon/plugins.py): loading, wrappers refused, failures local."""

from __future__ import annotations

import io
import sys
from collections.abc import Callable, Iterator
from importlib.metadata import EntryPoint, distributions
from pathlib import Path

import pytest
from helpers import fake_distribution, stream_records

from kerno_otel import EventType, Finding, PluginInfo, RedactionRule, RuleInput, hookimpl
from kerno_otel.daemon.daemon import Daemon
from kerno_otel.daemon.plugins import (
    PluginFailure,
    PluginHost,
    PluginLoadError,
    check_contributions,
)

WRAPPER = """
from kerno_otel import hookimpl

CALLS = []

@hookimpl(wrapper=True)
def daemon_startup(context):
    CALLS.append("before")
    result = yield
    CALLS.append("after")
    return result
"""

OLD_STYLE_WRAPPER = """
from kerno_otel import hookimpl

@hookimpl(hookwrapper=True)
def daemon_startup(context):
    yield
"""

# Stops the daemon it is loaded into as soon as it starts: the run ends without a timer.
STOPPER = """
from kerno_otel import hookimpl

CALLS = []

@hookimpl
def daemon_startup(context):
    CALLS.append(context.audit.closed)
    context.request_stop("request")
"""

REFUSED = (
    "is not supported: kerno-otel calls each plugin's hook on its own, so a wrapper would never run"
)


@pytest.fixture(autouse=True)
def forget_fake_plugins() -> Iterator[None]:
    """Each test's fake plugin modules are its own (the same names recur across tests)."""
    yield
    for name in [n for n in sys.modules if n.startswith("kerno_test_")]:
        del sys.modules[name]


def wrapping_site(tmp_path: Path, wrapper: str) -> Path:
    """A distribution of two plugins: ``wrapping`` (``wrapper``'s source) and ``stopper``."""
    site = tmp_path / "site"
    modules = {"kerno_test_wrapping": wrapper, "kerno_test_stopper": STOPPER}
    fake_distribution(site, "kerno-test-wrap", "1.0", modules)
    return site


def points(site: Path, monkeypatch: pytest.MonkeyPatch) -> list[EntryPoint]:
    """The entry points of the fake distributions under ``site``, importable as if pip-installed."""
    monkeypatch.syspath_prepend(str(site))
    return [ep for dist in distributions(path=[str(site)]) for ep in dist.entry_points]


@pytest.mark.parametrize(
    ("source", "kind"), [(WRAPPER, "wrapper=True"), (OLD_STYLE_WRAPPER, "hookwrapper=True")]
)
def test_a_hook_wrapper_is_refused_at_load(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, source: str, kind: str
) -> None:
    err = io.StringIO()
    host = PluginHost({}, {}, err, points=points(wrapping_site(tmp_path, source), monkeypatch))

    host.load()

    assert [p.name for p in host.plugins] == ["stopper"]
    [failure] = host.failures
    assert failure == PluginFailure(
        "wrapping",
        "kerno-test-wrap",
        "1.0",
        "daemon_startup",
        "PluginValidationError",
        failure.error_digest,
        f"hookimpl({kind}) {REFUSED}",
    )
    assert failure.error_digest.startswith("sha256:")
    assert err.getvalue() == (
        "kerno-otel: plugin 'wrapping' (kerno-test-wrap 1.0) failed in daemon_startup: "
        f"PluginValidationError: hookimpl({kind}) {REFUSED}\n"
    )
    # Unregistered: the hook reaches the other plugins only.
    assert host.pm.get_plugin("wrapping") is None
    assert [impl.plugin_name for impl in host.pm.hook.daemon_startup.get_hookimpls()] == ["stopper"]


def test_a_refused_wrapper_stops_a_strict_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    site = wrapping_site(tmp_path, WRAPPER)
    host = PluginHost({"strict": True}, {}, io.StringIO(), points=points(site, monkeypatch))

    with pytest.raises(PluginLoadError) as raised:
        host.load()

    assert str(raised.value) == (
        "plugin 'wrapping' (kerno-test-wrap 1.0) failed in daemon_startup: "
        "PluginValidationError: "
        f"hookimpl(wrapper=True) {REFUSED} (plugins.strict is on)"
    )


def test_the_daemon_records_a_refused_wrapper_as_plugin_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.syspath_prepend(str(wrapping_site(tmp_path, WRAPPER)))
    live = tmp_path / "log" / "kerno-audit.jsonl"
    config = tmp_path / "kerno.yaml"
    config.write_text(f"audit:\n  file_path: {live}\n")
    err = io.StringIO()

    code = Daemon(str(config), stderr=err, env={"KERNO_OTEL_PLUGINS": "wrapping,stopper"}).run()

    assert code == 0
    import kerno_test_stopper
    import kerno_test_wrapping

    assert (kerno_test_wrapping.CALLS, kerno_test_stopper.CALLS) == ([], [False])
    records = stream_records(live)
    loaded = [r["details"]["plugin"] for r in records if r["type"] == "plugin.load"]
    errors = [r["details"] for r in records if r["type"] == "plugin.error"]
    assert loaded == ["stopper"]
    assert [(e["plugin"], e["hook"], e["error_type"]) for e in errors] == [
        ("wrapping", "daemon_startup", "PluginValidationError")
    ]
    assert f"hookimpl(wrapper=True) {REFUSED}\n" in err.getvalue()


class Raises:
    @hookimpl
    def make_analyzer(self) -> object:
        raise RuntimeError("no analyzer today")


class Answers:
    def __init__(self, answer: object) -> None:
        self.answer = answer

    @hookimpl
    def make_analyzer(self) -> object:
        return self.answer


def host_with(*plugins: tuple[str, object]) -> tuple[PluginHost, io.StringIO]:
    """A host with in-process plugin objects, registered as entry points would be."""
    err = io.StringIO()
    host = PluginHost({}, {}, err)
    for name, plugin in plugins:
        host.register_object(plugin, PluginInfo(name, "kerno-test", "1.0"))
    return host, err


def test_first_skips_a_failing_plugin_and_returns_the_next_answer() -> None:
    answer = object()
    host, err = host_with(("a_raises", Raises()), ("b_none", Answers(None)), ("c", Answers(answer)))

    assert (
        host.first("make_analyzer", audit=None, config=None, providers={}, telemetry=None) is answer
    )
    assert [(f.plugin, f.hook, f.error_type) for f in host.failures] == [
        ("a_raises", "make_analyzer", "RuntimeError")
    ]
    assert err.getvalue() == (
        "kerno-otel: plugin 'a_raises' (kerno-test 1.0) failed in make_analyzer: "
        "RuntimeError: no analyzer today\n"
    )


class Registers:
    def __init__(
        self, rules: list[tuple[object, ...]], providers: list[tuple[object, ...]]
    ) -> None:
        self.rules = rules
        self.providers = providers

    @hookimpl
    def register_doctor_rules(self, register: Callable[..., None]) -> None:
        for args in self.rules:
            register(*args)

    @hookimpl
    def register_ai_providers(self, register: Callable[..., None]) -> None:
        for args in self.providers:
            register(*args)


class Provider:
    name = "echo"

    def complete(
        self, prompt: str, system: str | None, model: str, max_tokens: int, temperature: float
    ) -> tuple[str, int, int]:
        return prompt, 0, 0


def rule(given: RuleInput) -> list[Finding]:
    return []


def test_named_registrations_that_break_the_contract_are_the_plugins_failure() -> None:
    provider = Provider()
    good = Registers([("a_rule", rule)], [("echo", provider)])
    bad = Registers([("not_a_rule", 42), (7, rule), ("a",)], [("other", "not a provider")])
    host, _ = host_with(("bad", bad), ("good", good))

    assert host.named("register_doctor_rules") == {"a_rule": rule}
    assert host.named("register_ai_providers") == {"echo": provider}
    assert [(f.plugin, f.hook, f.message) for f in host.failures] == [
        ("bad", "register_doctor_rules", "expected register(name, rule)"),
        ("bad", "register_doctor_rules", "expected register(name, rule)"),
        ("bad", "register_doctor_rules", "expected register(name, rule)"),
        ("bad", "register_ai_providers", "expected register(name, provider)"),
    ]


class Contributes:
    """Registers the event types and redaction rules it is given."""

    def __init__(self, types: list[object], rules: tuple[object, ...] = ()) -> None:
        self.types = types
        self.rules = rules

    @hookimpl
    def register_event_types(self, register: Callable[..., None]) -> None:
        for event_type in self.types:
            register(event_type)

    @hookimpl
    def register_redaction_rules(self, register: Callable[..., None]) -> None:
        for rule in self.rules:
            register(rule)


CLOSED = {"type": "object", "properties": {}, "additionalProperties": False}


def test_an_event_type_with_a_bad_schema_is_refused_alone() -> None:
    # Issue 13, 1: one plugin's open details schema used to fail every command.
    good = EventType("good.thing", "good/doer", schema=CLOSED)
    other = EventType("bad.other", "bad/doer", schema=CLOSED)
    bad = Contributes([EventType("bad.open", "bad/doer", schema={"type": "object"}), other])
    host, err = host_with(("bad", bad), ("good", Contributes([good])))

    types = host.event_types()

    assert [t.name for t in types] == ["bad.other", "good.thing"]
    assert [t.source for t in types] == ["kerno-test", "kerno-test"]
    assert host.schemas.types()[-2:] == ["bad.other", "good.thing"]
    assert [(p.name, p.event_types) for p in host.plugins] == [
        ("bad", ["bad.other"]),
        ("good", ["good.thing"]),
    ]
    reason = (
        "event type 'bad.open' from kerno-test: details must be closed: "
        '"type": "object" and "additionalProperties": false'
    )
    assert [(f.plugin, f.hook, f.error_type, f.message) for f in host.failures] == [
        ("bad", "register_event_types", "ValueError", reason)
    ]
    assert err.getvalue() == (
        "kerno-otel: plugin 'bad' (kerno-test 1.0) failed in register_event_types: "
        f"ValueError: {reason}\n"
    )


def test_an_event_type_clashing_with_another_plugins_is_refused() -> None:
    first = EventType("acme.scan", "acme/scanner", schema=CLOSED)
    host, _ = host_with(("a", Contributes([first])), ("b", Contributes([first])))

    assert [t.name for t in host.event_types()] == ["acme.scan"]
    assert [(f.plugin, f.message) for f in host.failures] == [
        (
            "b",
            "event type 'acme.scan' from kerno-test: clashes with the type of the same name "
            "from kerno-test",
        )
    ]


def test_an_unusable_redaction_rule_is_refused_alone() -> None:
    good = RedactionRule("ticket", r"TICKET-[0-9]+")
    bad = Contributes([], (RedactionRule("broken", "(unclosed"), "not a rule"))
    host, _ = host_with(("bad", bad), ("good", Contributes([], (good,))))

    assert host.redaction_rules() == [good]
    assert [(f.plugin, f.hook, f.error_type) for f in host.failures] == [
        ("bad", "register_redaction_rules", "ValueError"),
        ("bad", "register_redaction_rules", "TypeError"),
    ]


@pytest.mark.parametrize(
    ("section", "env", "where"),
    [
        ({}, {"KERNO_OTEL_PLUGINS": "stopper,nosuch"}, "KERNO_OTEL_PLUGINS"),
        ({"enabled": ["stopper", "nosuch"]}, {}, "plugins.enabled"),
    ],
)
def test_a_plugin_asked_for_but_not_installed_is_named(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    section: dict[str, object],
    env: dict[str, str],
    where: str,
) -> None:
    # Issue 13, 8: KERNO_OTEL_PLUGINS=nosuch used to load nothing, silently.
    err = io.StringIO()
    site = wrapping_site(tmp_path, WRAPPER)
    host = PluginHost(section, env, err, points=points(site, monkeypatch))

    host.load()

    assert [p.name for p in host.plugins] == ["stopper"]
    assert [(f.plugin, f.distribution, f.hook, f.error_type) for f in host.failures] == [
        ("nosuch", "not-installed", "load", "PluginNotFoundError")
    ]
    assert err.getvalue() == (
        "kerno-otel: plugin 'nosuch' (not-installed 0) failed in load: PluginNotFoundError: "
        f"{where} names 'nosuch', but no installed plugin has that name "
        "(installed: stopper, wrapping)\n"
    )


def test_a_rule_with_unusable_thresholds_is_refused_alone() -> None:
    def bad_rule(given: RuleInput) -> list[Finding]:
        return []

    def taken(given: RuleInput) -> list[Finding]:
        return []

    def own(given: RuleInput) -> list[Finding]:
        return []

    bad_rule.thresholds = {"diskguard_pct": "high"}  # type: ignore[attr-defined]
    taken.thresholds = {"oom_memory_pct": 50.0}  # type: ignore[attr-defined]
    own.thresholds = {"diskguard_pct": 90.0}  # type: ignore[attr-defined]
    plugin = Registers([("bad_rule", bad_rule), ("taken", taken), ("own", own)], [])
    host, _ = host_with(("acme", plugin), ("other", Registers([("own", rule)], [])))

    assert host.named("register_doctor_rules") == {"own": own}
    assert [(n, p.name) for n, p in host.owners["register_doctor_rules"].items()] == [
        ("own", "acme")
    ]
    assert [(f.plugin, f.message) for f in host.failures] == [
        ("acme", "rule 'bad_rule': threshold 'diskguard_pct': the default must be a number >= 0"),
        ("acme", "rule 'taken': threshold 'oom_memory_pct' is kerno's own; choose another name"),
        ("other", "rule 'own' is already registered by plugin 'acme'"),
    ]


# Registers a route that is not a Route, a call with no argument, and a BPF program hook
# that raises; then stops the daemon it is loaded into.
BAD_REGISTRATIONS = """
from kerno_otel import hookimpl


@hookimpl
def register_http_routes(register):
    register(object())
    register()


@hookimpl
def register_bpf_programs(register):
    raise RuntimeError("no programs today")


@hookimpl
def register_config_secrets(register):
    raise RuntimeError("no secrets today")


@hookimpl
def daemon_startup(context):
    context.request_stop("request")
"""


def test_bad_routes_and_a_raising_bpf_hook_are_recorded_as_plugin_errors(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A route that is not a Route used to be dropped without a word (and register() with no
    # argument raised IndexError into the daemon's start); a raising register_bpf_programs
    # reached stderr but never the log.
    site = tmp_path / "site"
    fake_distribution(site, "kerno-test-bad", "1.0", {"kerno_test_bad": BAD_REGISTRATIONS})
    monkeypatch.syspath_prepend(str(site))
    live = tmp_path / "log" / "kerno-audit.jsonl"
    config = tmp_path / "kerno.yaml"
    config.write_text(f"audit:\n  file_path: {live}\n")
    err = io.StringIO()

    code = Daemon(str(config), stderr=err, env={"KERNO_OTEL_PLUGINS": "bad"}).run()

    assert code == 0
    errors = [r["details"] for r in stream_records(live) if r["type"] == "plugin.error"]
    assert sorted((e["plugin"], e["hook"], e["error_type"]) for e in errors) == [
        ("bad", "register_bpf_programs", "RuntimeError"),
        ("bad", "register_config_secrets", "RuntimeError"),
        ("bad", "register_http_routes", "TypeError"),
        ("bad", "register_http_routes", "TypeError"),
    ]
    assert "failed in register_http_routes: TypeError: expected a Route\n" in err.getvalue()


def test_plugins_lists_every_refused_contribution(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # `kerno-otel plugins` collects as the daemon does: config secrets and routes included.
    site = tmp_path / "site"
    fake_distribution(site, "kerno-test-bad", "1.0", {"kerno_test_bad": BAD_REGISTRATIONS})
    host = PluginHost({}, {}, io.StringIO(), points=points(site, monkeypatch))
    host.load()

    check_contributions(host)

    assert sorted((f.hook, f.message) for f in host.failures) == [
        ("register_bpf_programs", "no programs today"),
        ("register_config_secrets", "no secrets today"),
        ("register_http_routes", "expected a Route"),
        ("register_http_routes", "expected a Route"),
    ]
