"""The plugin contract: every hook a kerno-otel plugin can implement, and when it is called.

A plugin is a module (or object) registered under the ``kerno_otel.plugins``
entry-point group whose functions carry ``@kerno_otel.hookimpl``::

    # pyproject.toml of the plugin's distribution
    [project.entry-points."kerno_otel.plugins"]
    acme = "acme_kerno.plugin"

    # acme_kerno/plugin.py
    from kerno_otel import EventType, hookimpl

    @hookimpl
    def register_event_types(register):
        register(EventType("acme.export", "acme/exporter", schema={...}))

Hooks that collect things take a ``register`` callback; a plugin calls it once
per thing it contributes; what those things must provide is typed in
:mod:`kerno_otel.contract`. A hook that raises does not stop the daemon: the
error becomes a ``plugin.error`` audit record and one line on stderr (or, with
``plugins.strict: true``, a failed start).

Each plugin's hook is called on its own, in load order, so that one failing
plugin cannot keep the others' hooks from running. A hook wrapper
(``hookimpl(wrapper=True)`` or ``hookimpl(hookwrapper=True)``) would therefore
never run: a plugin that declares one is refused at load, as a ``plugin.error``
naming the hook. See docs/plugins.md for a runnable example of every hook.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    from opentelemetry.metrics import Meter
    from opentelemetry.trace import Tracer

    from kerno_otel.audit.log import AuditLog
    from kerno_otel.config import Config
    from kerno_otel.contract import (
        AIProvider,
        BPFProgram,
        PluginInfo,
        Rule,
        SinkFactory,
        SourceFactory,
    )
    from kerno_otel.findings import Analyzer
    from kerno_otel.records.catalogue import EventType
    from kerno_otel.records.redact import RedactionRule
    from kerno_otel.telemetry import Telemetry

#: The pluggy project name; hook implementations are marked with :data:`hookimpl`.
PROJECT = "kerno_otel"
#: The entry-point group plugins register under (first-party ones too).
ENTRY_POINT_GROUP = "kerno_otel.plugins"

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@dataclass(frozen=True)
class Route:
    """An HTTP route a plugin serves on the daemon's server (behind its bearer token).

    ``handler`` gets the request path (with query) and returns (status, content
    type, body). It runs on a server thread and must not block for long.
    """

    path: str
    handler: Callable[[str], tuple[int, str, bytes]]
    #: Whether the route needs the bearer token (health probes do not).
    authenticated: bool = True


@dataclass(frozen=True)
class ConfigDiff:
    """What a reload changed, by dotted key (``doctor.interval``, ``http.bearer_token``)."""

    changed: tuple[str, ...]
    #: Changed keys that took effect at once.
    applied: tuple[str, ...]
    #: Changed keys that only take effect after a restart.
    restart_required: tuple[str, ...]
    #: (key, before, after) for every changed key, secrets already masked.
    changes: tuple[tuple[str, Any, Any], ...]


@dataclass
class DaemonContext:
    """What the daemon hands its plugins: the audit log, the config, what was registered.

    ``config`` is replaced on a successful reload; a plugin's own section is
    ``context.section("<plugin name>")``. The registered things are collected
    once, before :func:`daemon_startup`; what one plugin publishes for others
    (``analyzer``, ``http_address``) is a field too, never a key in ``state``.
    """

    audit: AuditLog
    config: Config
    request_stop: Callable[[str], None]
    #: The plugins that loaded, in load order.
    plugins: Sequence[PluginInfo] = ()
    #: What :func:`register_http_routes` collected (served by the ``auth`` plugin).
    routes: Sequence[Route] = ()
    #: Source factories by name, from :func:`register_sources`.
    sources: Mapping[str, SourceFactory] = field(default_factory=dict)
    #: Doctor rules by name, from :func:`register_doctor_rules`.
    rules: Mapping[str, Rule] = field(default_factory=dict)
    #: The plugin that registered each rule, by rule name: a rule that raises becomes
    #: a ``plugin.error`` naming it (``build_doctor(rule_plugins=...)``).
    rule_plugins: Mapping[str, PluginInfo] = field(default_factory=dict)
    #: The plugin that registered each source, by source name (the same, for a source
    #: factory that raises: ``build_doctor(source_plugins=...)``).
    source_plugins: Mapping[str, PluginInfo] = field(default_factory=dict)
    #: Sink factories by name, from :func:`register_sinks`.
    sinks: Mapping[str, SinkFactory] = field(default_factory=dict)
    #: AI providers by name, from :func:`register_ai_providers`.
    ai_providers: Mapping[str, AIProvider] = field(default_factory=dict)
    #: What :func:`make_analyzer` built (None: no plugin makes one); read at every cycle.
    analyzer: Analyzer | None = None
    #: ``host:port`` the daemon's HTTP server is bound to, set by the plugin serving it.
    http_address: str | None = None
    #: The daemon's tracer, meter and shared instruments (see docs/telemetry.md); a
    #: no-op one unless telemetry is configured. Set before :func:`daemon_startup`.
    telemetry: Telemetry = field(default_factory=lambda: _telemetry_off())
    #: Free-form room for a plugin's own per-daemon objects (its threads, its server),
    #: under the plugin's own name. Not a channel between plugins: use the fields above.
    state: dict[str, Any] = field(default_factory=dict)

    def section(self, name: str) -> Mapping[str, Any]:
        """The config section ``name`` (a plugin's own section is named after it)."""
        return self.config.section(name)

    @property
    def tracer(self) -> Tracer:
        """``telemetry.tracer``: an OpenTelemetry ``Tracer`` for the plugin's own spans."""
        return self.telemetry.tracer

    @property
    def meter(self) -> Meter:
        """``telemetry.meter``: an OpenTelemetry ``Meter`` for the plugin's own instruments."""
        return self.telemetry.meter


def _telemetry_off() -> Telemetry:
    from kerno_otel.telemetry import Telemetry

    return Telemetry.off()


# --- contributions ---------------------------------------------------------------------------


@hookspec
def register_event_types(register: Callable[[EventType], None]) -> None:
    """Contribute audit event types, each with its ``details`` JSON Schema.

    Called once at start-up, before the audit log opens. A contributed type is
    validated like a built-in one and published by ``kerno-otel schema export``.
    A type that does not fit (a name that clashes with a built-in type or another
    plugin's, a ``details`` schema that is not closed or does not compile) is
    refused alone, as this plugin's ``plugin.error``; its other types stay.
    """


@hookspec
def register_redaction_rules(register: Callable[[RedactionRule], None]) -> None:
    """Contribute extra redaction rules (applied to every record, after the defaults).

    Called once at start-up, before the audit log opens.
    """


@hookspec
def register_config_secrets(register: Callable[[str], None]) -> None:
    """Declare the keys of your own config section whose values are secrets.

    ``register("routing_key")`` (a dotted key inside your section; a mapping is
    masked whole). Called once at start-up. Their values never appear in a
    ``config.reload`` record's ``changes``. Keys named like a secret (``*key*``,
    ``*token*``, ``*secret*``, ``*password*``, ``url``, ``headers``) are masked
    whether declared or not.
    """


@hookspec
def register_sources(register: Callable[[str, SourceFactory], None]) -> None:
    """Contribute signal sources for the doctor: ``register(name, factory)``.

    ``factory(config)`` returns a :class:`kerno_otel.contract.Source` (``begin()``
    at the start of a window, ``end(begun, window_s) -> Signals`` at its end), or
    None when the source cannot work on this host. Called once at start-up; the
    factory is called for every cycle. Collected into ``DaemonContext.sources``.
    """


@hookspec
def register_bpf_programs(register: Callable[[str, BPFProgram], None]) -> None:
    """Contribute BPF programs: ``register(name, program)``.

    A program is a :class:`kerno_otel.contract.BPFProgram`. The daemon loads the
    ones whose names ``bpf.programs`` lists (when ``bpf.enabled``) after the
    plugins load and before :func:`daemon_startup`, records each attempt as a
    ``bpf.load`` audit record, and closes them at shutdown; ``kerno-otel doctor``
    does the same around its cycle. Register the same object every time: your
    sources read what the loader loaded. Called once at start-up.
    """


@hookspec
def register_doctor_rules(register: Callable[[str, Rule], None]) -> None:
    """Contribute doctor rules: ``register(name, rule)``.

    A rule is a :class:`kerno_otel.contract.Rule`: ``rule(RuleInput)`` returns the
    findings (:class:`kerno_otel.findings.Finding`) for the cycle's signals; when
    its signals are absent, one INFO finding saying so. Its own thresholds, if
    any, are a ``thresholds`` attribute (name -> default). Called once at start-up;
    collected into ``DaemonContext.rules`` (and who registered each into
    ``DaemonContext.rule_plugins``). A rule that raises in a cycle is a ``plugin.error``.
    """


@hookspec
def register_sinks(register: Callable[[str, SinkFactory], None]) -> None:
    """Contribute finding sinks: ``register(name, factory)``.

    ``factory(config)`` returns a :class:`kerno_otel.contract.Sink` (``render`` a
    finding to bytes once, ``deliver`` those bytes); it may raise ConfigError
    naming a key of its section. ``doctor.sinks`` picks the sinks by name.
    Called once at start-up; collected into ``DaemonContext.sinks``.
    """


@hookspec
def register_ai_providers(register: Callable[[str, AIProvider], None]) -> None:
    """Contribute LLM providers for the analyzer: ``register(name, provider)``.

    A provider is a :class:`kerno_otel.contract.AIProvider`; ``ai.provider``
    selects it by name. Called once at start-up; collected into
    ``DaemonContext.ai_providers`` and handed to :func:`make_analyzer`.
    """


@hookspec(firstresult=True)
def make_analyzer(
    audit: AuditLog, config: Config, providers: Mapping[str, AIProvider], telemetry: Telemetry
) -> Analyzer | None:
    """Build the analyzer that explains each doctor cycle's findings (one is wanted).

    Called once by the daemon after the register hooks (the result becomes
    ``DaemonContext.analyzer``) and once per ``kerno-otel doctor`` run with
    ``ai.enabled`` (or ``--ai``). ``providers`` are the registered AI providers
    by name; ``telemetry`` is the command's (``DaemonContext.telemetry`` in the
    daemon), for the analyzer's spans and metrics: a no-op when telemetry is
    off. The first plugin, in load order, that returns an
    :class:`kerno_otel.findings.Analyzer` wins; return None to let others answer.
    """


@hookspec
def register_http_routes(register: Callable[[Route], None]) -> None:
    """Contribute routes to the daemon's HTTP server (see :class:`Route`)."""


# --- the daemon's life -----------------------------------------------------------------------


@hookspec
def daemon_startup(context: DaemonContext) -> None:
    """The daemon has opened the audit log and loaded every plugin; start your work.

    Called once, in plugin registration order. Threads a plugin starts here
    must stop in :func:`daemon_shutdown`.
    """


@hookspec
def daemon_shutdown(context: DaemonContext, reason: str, uptime_s: float) -> None:
    """The daemon is stopping (``reason``: ``signal``, ``request`` or ``error``).

    Called once, before the audit log is flushed and closed: a plugin may still
    emit records here.
    """


@hookspec
def daemon_panic(context: DaemonContext, exception_type: str, panic_digest: str) -> None:
    """An unhandled exception is ending the daemon.

    ``panic_digest`` is ``sha256:<hex>`` of the traceback; the traceback itself
    only goes to stderr, never into the audit log. The daemon exits non-zero
    after this hook (and :func:`daemon_shutdown` is not called).
    """


@hookspec
def config_reload(
    context: DaemonContext,
    old: Config,
    new: Config | None,
    diff: ConfigDiff | None,
    source: str,
    path: str,
    uid: int,
    error: str | None,
) -> None:
    """A reload was asked for (``source``: ``SIGHUP``, ``file`` or ``env``).

    On success ``new`` and ``diff`` are set and ``context.config`` is already
    ``new``; apply what your plugin can apply live. On failure ``new`` and
    ``diff`` are None, ``error`` says why, and the old config stays in force.
    """
