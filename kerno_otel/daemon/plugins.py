"""Plugin loading: the one place entry points become registered pluggy plugins.

Plugins come from the ``kerno_otel.plugins`` entry-point group only (first-party
ones too), filtered by ``plugins.enabled`` / ``plugins.disabled`` and the
``KERNO_OTEL_PLUGINS`` allow-list. A plugin that fails to import, fails pluggy's
validation or raises in a hook becomes a :class:`PluginFailure` (recorded as a
``plugin.error`` audit record by the daemon) and one line on stderr; with
``plugins.strict: true`` it stops the start instead.
"""

from __future__ import annotations

import hashlib
import traceback
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from importlib.metadata import EntryPoint, entry_points
from typing import Any, TextIO

import pluggy

from kerno_otel import hookspecs
from kerno_otel.config.load import load_config
from kerno_otel.records.catalogue import BUILTIN_TYPES, EventType
from kerno_otel.records.redact import RedactionRule, Redactor
from kerno_otel.records.schema import SchemaSet

#: Scrubs what plugins' exceptions say before it reaches stderr (default rules only:
#: plugin rules are not known yet when loading fails).
_STDERR_REDACTOR = Redactor()


class PluginLoadError(Exception):
    """``plugins.strict`` is on and a plugin failed; the message names it, the hook and why."""


@dataclass
class PluginInfo:
    """One loaded plugin, as ``kerno-otel plugins`` lists it."""

    name: str
    distribution: str
    version: str
    hooks: list[str] = field(default_factory=list)
    event_types: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class PluginFailure:
    """A plugin that failed to load or raised in a hook (never the traceback itself)."""

    plugin: str
    distribution: str
    version: str
    hook: str
    error_type: str
    error_digest: str
    message: str


def _digest(exc: BaseException) -> str:
    text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    return "sha256:" + hashlib.sha256(text.encode("utf-8", "replace")).hexdigest()


def allowed(name: str, section: Mapping[str, Any], env: Mapping[str, str]) -> bool:
    """Whether plugin ``name`` may load under the config and ``KERNO_OTEL_PLUGINS``.

    ``KERNO_OTEL_PLUGINS`` (comma-separated names; empty means none) wins over
    the config; ``plugins.disabled`` wins over ``plugins.enabled``.
    """
    allow = env.get("KERNO_OTEL_PLUGINS")
    if allow is not None:
        return name in {n.strip() for n in allow.split(",") if n.strip()}
    if name in (section.get("disabled") or []):
        return False
    enabled = section.get("enabled")
    return enabled is None or name in enabled


class PluginHost:
    """Loads plugins and calls their hooks one plugin at a time, so one failure stays local."""

    def __init__(
        self,
        section: Mapping[str, Any],
        env: Mapping[str, str],
        stderr: TextIO,
        *,
        points: Iterable[EntryPoint] | None = None,
    ) -> None:
        self.pm = pluggy.PluginManager(hookspecs.PROJECT)
        self.pm.add_hookspecs(hookspecs)
        self.plugins: list[PluginInfo] = []
        self.failures: list[PluginFailure] = []
        self._section = section
        self._env = env
        self._stderr = stderr
        self._strict = bool(section.get("strict"))
        self._points = points
        self._info: dict[str, PluginInfo] = {}

    # -- loading ------------------------------------------------------------------

    def load(self) -> None:
        """Import and register every allowed entry point, then ``check_pending()``."""
        points = (
            self._points
            if self._points is not None
            else entry_points(group=hookspecs.ENTRY_POINT_GROUP)
        )
        for point in sorted(points, key=lambda p: p.name):
            if not allowed(point.name, self._section, self._env):
                continue
            dist = point.dist
            distribution = dist.name if dist is not None else "(unknown)"
            version = dist.version if dist is not None else "0"
            info = PluginInfo(point.name, distribution, version)
            try:
                module = point.load()
                self.pm.register(module, name=point.name)
            except Exception as exc:
                self._fail(info, "load", exc)
                continue
            info.hooks = sorted(caller.name for caller in self.pm.get_hookcallers(module) or [])
            self.plugins.append(info)
            self._info[point.name] = info
        try:
            self.pm.check_pending()
        except pluggy.PluginValidationError as exc:
            plugin = getattr(exc, "plugin", None)
            name = self.pm.get_name(plugin) if plugin is not None else "(unknown)"
            info = self._info.get(name or "", PluginInfo(name or "(unknown)", "(unknown)", "0"))
            if plugin is not None:
                self.pm.unregister(plugin)
            if info in self.plugins:
                self.plugins.remove(info)
            self._fail(info, "check_pending", exc)

    def register_object(self, plugin: object, info: PluginInfo) -> None:
        """Register an in-process plugin object (for embedding and tests), like an entry point."""
        self.pm.register(plugin, name=info.name)
        info.hooks = sorted(c.name for c in self.pm.get_hookcallers(plugin) or [])
        self.plugins.append(info)
        self._info[info.name] = info

    def _fail(self, info: PluginInfo, hook: str, exc: BaseException) -> None:
        message = str(exc).splitlines()[0][:200] if str(exc) else ""
        # The exception's text is the plugin's: it may quote a token or an address.
        message = _STDERR_REDACTOR.redact_text(message)[0]
        failure = PluginFailure(
            info.name,
            info.distribution,
            info.version,
            hook,
            type(exc).__name__,
            _digest(exc),
            message,
        )
        self.failures.append(failure)
        self._stderr.write(
            f"kerno-otel: plugin {info.name!r} ({info.distribution} {info.version}) failed in "
            f"{hook}: {type(exc).__name__}: {message}\n"
        )
        if self._strict:
            raise PluginLoadError(
                f"plugin {info.name!r} failed in {hook}: {type(exc).__name__}: {message} "
                "(plugins.strict is on)"
            ) from exc

    # -- calling ------------------------------------------------------------------

    def call(self, hook: str, **kwargs: Any) -> list[PluginFailure]:
        """Call ``hook`` on every plugin implementing it; failures are recorded, not raised.

        Returns the failures of this call (also appended to :attr:`failures`).
        """
        caller = getattr(self.pm.hook, hook)
        new: list[PluginFailure] = []
        # pluggy would call the last registered first; we keep registration order
        # (entry-point names, sorted), which get_hookimpls() returns, except that
        # tryfirst/trylast keep pluggy's meaning (the otlp plugin's daemon_shutdown
        # is trylast: it ships what the other plugins' shutdown hooks wrote).
        impls = sorted(
            caller.get_hookimpls(), key=lambda i: 0 if i.tryfirst else 2 if i.trylast else 1
        )
        for impl in impls:
            args = {name: kwargs[name] for name in impl.argnames}
            try:
                impl.function(**args)
            except Exception as exc:
                info = self._info.get(impl.plugin_name) or PluginInfo(
                    impl.plugin_name, "(unknown)", "0"
                )
                before = len(self.failures)
                self._fail(info, hook, exc)
                new.extend(self.failures[before:])
        return new

    def collect(self, hook: str, **kwargs: Any) -> list[tuple[str, tuple[Any, ...]]]:
        """Call a ``register`` hook; (plugin name, registered args) for everything registered."""
        out: list[tuple[str, tuple[Any, ...]]] = []
        caller = getattr(self.pm.hook, hook)
        for impl in caller.get_hookimpls():
            got: list[tuple[Any, ...]] = []

            def register(*args: Any, _got: list[tuple[Any, ...]] = got) -> None:
                _got.append(args)

            call_args = {**kwargs, "register": register}
            try:
                impl.function(**{name: call_args[name] for name in impl.argnames})
            except Exception as exc:
                info = self._info.get(impl.plugin_name) or PluginInfo(
                    impl.plugin_name, "(unknown)", "0"
                )
                self._fail(info, hook, exc)
                continue
            out.extend((impl.plugin_name, args) for args in got)
        return out

    def event_types(self) -> list[EventType]:
        """Event types contributed by plugins; a bad one is that plugin's failure."""
        types: list[EventType] = []
        seen: dict[str, str] = {}
        for plugin, args in self.collect("register_event_types"):
            info = self._info.get(plugin) or PluginInfo(plugin, "(unknown)", "0")
            event_type = args[0] if args else None
            if not isinstance(event_type, EventType):
                self._fail(info, "register_event_types", TypeError("expected an EventType"))
                continue
            if event_type.name in BUILTIN_TYPES or event_type.name in seen:
                owner = "kerno-otel" if event_type.name in BUILTIN_TYPES else seen[event_type.name]
                self._fail(
                    info,
                    "register_event_types",
                    ValueError(f"event type {event_type.name!r} is already defined by {owner}"),
                )
                continue
            if event_type.schema is None:
                self._fail(
                    info,
                    "register_event_types",
                    ValueError(f"event type {event_type.name!r} has no details schema"),
                )
                continue
            seen[event_type.name] = plugin
            info.event_types.append(event_type.name)
            types.append(
                EventType(
                    event_type.name,
                    event_type.actor,
                    event_type.severity,
                    dict(event_type.policies),
                    event_type.schema,
                    info.distribution,
                )
            )
        return types

    def redaction_rules(self) -> list[RedactionRule]:
        """Redaction rules contributed by plugins."""
        rules: list[RedactionRule] = []
        for plugin, args in self.collect("register_redaction_rules"):
            rule = args[0] if args else None
            if isinstance(rule, RedactionRule):
                rules.append(rule)
            else:
                info = self._info.get(plugin) or PluginInfo(plugin, "(unknown)", "0")
                self._fail(info, "register_redaction_rules", TypeError("expected a RedactionRule"))
        return rules

    def named(self, hook: str) -> dict[str, Any]:
        """``register(name, thing)`` hooks (sources, rules, sinks, providers) as a dict."""
        return {args[0]: args[1] for _, args in self.collect(hook) if len(args) == 2}


def load_with_schemas(
    config_path: str | None, env: Mapping[str, str], stderr: TextIO
) -> tuple[PluginHost, SchemaSet]:
    """Config, plugins and the schema set they make (built-ins plus plugin event types).

    For the commands that need plugin types without running the daemon
    (``plugins``, ``schema``, ``audit validate``). Raises ConfigError and
    PluginLoadError.
    """
    config = load_config(config_path, env)
    host = PluginHost(config.section("plugins"), env, stderr)
    host.load()
    types = host.event_types()
    schemas = SchemaSet.builtin()
    if types:
        schemas = schemas.with_types({t.name: t for t in types})
    return host, schemas


def record_failures(audit: Any, failures: Iterable[PluginFailure]) -> None:
    """One ``plugin.error`` record per failure (``audit`` is the :class:`AuditLog`)."""
    for failure in failures:
        audit.emit(
            "plugin.error",
            details={
                "plugin": failure.plugin,
                "distribution": failure.distribution,
                "version": failure.version,
                "hook": failure.hook,
                "error_type": failure.error_type,
                "error_digest": failure.error_digest,
            },
            outcome="failure",
        )
