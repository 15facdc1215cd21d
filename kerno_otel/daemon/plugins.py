"""Plugin loading: the one place entry points become registered pluggy plugins.

Plugins come from the ``kerno_otel.plugins`` entry-point group only (first-party
ones too), filtered by ``plugins.enabled`` / ``plugins.disabled`` and the
``KERNO_OTEL_PLUGINS`` allow-list. A plugin that fails to import, fails pluggy's
validation or raises in a hook becomes a :class:`PluginFailure` (recorded as a
``plugin.error`` audit record by the daemon) and one line on stderr; with
``plugins.strict: true`` it stops the start instead.

Hooks are called one plugin at a time (:meth:`PluginHost.call`), not through
pluggy's own loop, so a plugin that raises cannot stop the others. A hook
wrapper would never run that way, so a plugin declaring one is refused at load.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from importlib.metadata import EntryPoint, entry_points
from typing import Any, TextIO

import pluggy

from kerno_otel import hookspecs
from kerno_otel.config import load_config
from kerno_otel.contract import PluginInfo
from kerno_otel.daemon.contributions import NAMED, problem_of
from kerno_otel.daemon.failures import (
    NOT_INSTALLED,
    PluginFailure,
    PluginLoadError,
    PluginNotFoundError,
    failure_line,
    failure_of,
    record_failures,
)
from kerno_otel.hookspecs import Route
from kerno_otel.records.catalogue import EventType
from kerno_otel.records.redact import RedactionRule, Redactor

__all__ = [
    "NOT_INSTALLED",
    "PluginFailure",
    "PluginHost",
    "PluginLoadError",
    "PluginNotFoundError",
    "allowed",
    "check_contributions",
    "failure_line",
    "failure_of",
    "load_with_schemas",
    "record_failures",
]
from kerno_otel.records.schema import SchemaSet


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
        #: ``plugins.strict``: the first failure raises PluginLoadError instead of being recorded.
        self.strict = bool(section.get("strict"))
        self._points = points
        self._info: dict[str, PluginInfo] = {}
        #: hook -> registered name -> the plugin that registered it (filled by :meth:`named`).
        self.owners: dict[str, dict[str, PluginInfo]] = {}
        #: The built-in schema set plus the event types :meth:`event_types` accepted.
        self.schemas: SchemaSet = SchemaSet.builtin()

    # -- loading ------------------------------------------------------------------

    def load(self) -> None:
        """Import and register every allowed entry point, then ``check_pending()``."""
        points = (
            self._points
            if self._points is not None
            else entry_points(group=hookspecs.ENTRY_POINT_GROUP)
        )
        points = sorted(points, key=lambda p: p.name)
        self._check_requested({p.name for p in points})
        for point in points:
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
            self._accept(module, info)
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

    def _check_requested(self, installed: set[str]) -> None:
        """A plugin asked for by name that is not installed is a failure, not silence (issue 13)."""
        allow = self._env.get("KERNO_OTEL_PLUGINS")
        if allow is not None:
            asked, where = [n.strip() for n in allow.split(",") if n.strip()], "KERNO_OTEL_PLUGINS"
        else:
            asked, where = list(self._section.get("enabled") or []), "plugins.enabled"
        names = sorted(installed)
        # The line is cut at 200 characters: a few names, and how many there are.
        known = ", ".join(names[:5]) or "none"
        if len(names) > 5:
            known += f", … ({len(names)} in all)"
        for name in asked:
            if name not in installed:
                error = PluginNotFoundError(
                    f"{where} names {name!r}, but no installed plugin has that name "
                    f"(installed: {known})"
                )
                self._fail(PluginInfo(name, NOT_INSTALLED, "0"), "load", error)

    def register_object(self, plugin: object, info: PluginInfo) -> None:
        """Register an in-process plugin object (for embedding and tests), like an entry point."""
        self.pm.register(plugin, name=info.name)
        self._accept(plugin, info)

    def _accept(self, plugin: object, info: PluginInfo) -> None:
        """List a registered plugin, or refuse it (unregistered, a failure) if it has a wrapper."""
        callers = self.pm.get_hookcallers(plugin) or []
        for caller in callers:
            for impl in caller.get_hookimpls():
                if impl.plugin is plugin and (impl.wrapper or impl.hookwrapper):
                    self.pm.unregister(plugin)
                    kind = "wrapper=True" if impl.wrapper else "hookwrapper=True"
                    # Issue 10: call() runs each plugin's hook on its own (one failure stays
                    # local), so pluggy never gets to run a wrapper around the others.
                    refused = pluggy.PluginValidationError(
                        plugin,
                        f"hookimpl({kind}) is not supported: kerno-otel calls each plugin's "
                        "hook on its own, so a wrapper would never run",
                    )
                    self._fail(info, caller.name, refused)
                    return
        info.hooks = sorted(caller.name for caller in callers)
        self.plugins.append(info)
        self._info[info.name] = info

    def _info_for(self, name: str) -> PluginInfo:
        return self._info.get(name) or PluginInfo(name, "(unknown)", "0")

    def _fail(self, info: PluginInfo, hook: str, exc: BaseException) -> None:
        failure = failure_of(info, hook, exc)
        self.failures.append(failure)
        if self.strict:
            # The CLI prints this as its one "Error: ..." line (exit 2).
            raise PluginLoadError(
                f"plugin {info.name!r} ({info.distribution} {info.version}) failed in {hook}: "
                f"{failure.error_type}: {failure.message} (plugins.strict is on)"
            ) from exc
        self._stderr.write(failure_line(failure))

    # -- calling ------------------------------------------------------------------

    def _impls(self, hook: str) -> list[pluggy.HookImpl]:
        """``hook``'s implementations in the order kerno-otel calls them."""
        # pluggy would call the last registered first; we keep registration order
        # (entry-point names, sorted), which get_hookimpls() returns, except that
        # tryfirst/trylast keep pluggy's meaning (the otlp plugin's daemon_shutdown
        # is trylast: it ships what the other plugins' shutdown hooks wrote).
        impls = getattr(self.pm.hook, hook).get_hookimpls()
        return sorted(impls, key=lambda i: 0 if i.tryfirst else 2 if i.trylast else 1)

    def _run(self, hook: str, impl: pluggy.HookImpl, kwargs: Mapping[str, Any]) -> tuple[bool, Any]:
        """(True, result) of one plugin's ``hook``, or (False, None) after recording its failure."""
        try:
            return True, impl.function(**{name: kwargs[name] for name in impl.argnames})
        except Exception as exc:
            self._fail(self._info_for(impl.plugin_name), hook, exc)
            return False, None

    def call(self, hook: str, **kwargs: Any) -> list[PluginFailure]:
        """Call ``hook`` on every plugin implementing it; failures are recorded, not raised.

        Returns the failures of this call (also appended to :attr:`failures`).
        """
        before = len(self.failures)
        for impl in self._impls(hook):
            self._run(hook, impl, kwargs)
        return self.failures[before:]

    def first(self, hook: str, **kwargs: Any) -> Any:
        """The first result that is not None of a ``firstresult`` hook, in call order.

        A plugin that raises is recorded as a failure and the next one is asked.
        """
        for impl in self._impls(hook):
            ok, result = self._run(hook, impl, kwargs)
            if ok and result is not None:
                return result
        return None

    def collect(self, hook: str, **kwargs: Any) -> list[tuple[str, tuple[Any, ...]]]:
        """Call a ``register`` hook; (plugin name, registered args) for everything registered.

        What a plugin registered before raising is dropped with it.
        """
        out: list[tuple[str, tuple[Any, ...]]] = []
        for impl in self._impls(hook):
            got: list[tuple[Any, ...]] = []

            def register(*args: Any, _got: list[tuple[Any, ...]] = got) -> None:
                _got.append(args)

            if self._run(hook, impl, {**kwargs, "register": register})[0]:
                out.extend((impl.plugin_name, args) for args in got)
        return out

    def event_types(self) -> list[EventType]:
        """Event types contributed by plugins; a bad one is refused alone, as its plugin's failure.

        Each type is checked the way the audit log will check it (name, actor, a closed
        ``details`` schema that compiles) against the built-ins and the types accepted
        before it, so what is returned always makes a valid schema set (:attr:`schemas`).
        """
        types: list[EventType] = []
        schemas = SchemaSet.builtin()
        for plugin, args in self.collect("register_event_types"):
            info = self._info_for(plugin)
            event_type = args[0] if args else None
            if not isinstance(event_type, EventType):
                self._fail(info, "register_event_types", TypeError("expected an EventType"))
                continue
            owned = EventType(
                event_type.name,
                event_type.actor,
                event_type.severity,
                dict(event_type.policies),
                event_type.schema,
                info.distribution,
            )
            try:
                schemas = schemas.with_types({owned.name: owned})
            except ValueError as exc:
                # Issue 13: one plugin's bad schema used to stop every command.
                self._fail(info, "register_event_types", exc)
                continue
            info.event_types.append(owned.name)
            types.append(owned)
        self.schemas = schemas
        return types

    def redaction_rules(self) -> list[RedactionRule]:
        """Redaction rules contributed by plugins; an unusable one is refused alone."""
        rules: list[RedactionRule] = []
        # The rules must work together too (kinds and replacements that clash).
        trial = Redactor()
        for plugin, args in self.collect("register_redaction_rules"):
            info = self._info_for(plugin)
            rule = args[0] if args else None
            if not isinstance(rule, RedactionRule):
                self._fail(info, "register_redaction_rules", TypeError("expected a RedactionRule"))
                continue
            try:
                trial.add_rule(rule)
            except (ValueError, TypeError) as exc:
                self._fail(info, "register_redaction_rules", exc)
                continue
            rules.append(rule)
        return rules

    def config_secrets(self) -> frozenset[str]:
        """Dotted keys plugins declared secret in their own sections (``webhook.routing_key``)."""
        keys: set[str] = set()
        for plugin, args in self.collect("register_config_secrets"):
            key = args[0] if args else None
            if not isinstance(key, str) or not key:
                self._fail(
                    self._info_for(plugin),
                    "register_config_secrets",
                    TypeError("expected a key name"),
                )
                continue
            keys.add(f"{plugin}.{key}")
        return frozenset(keys)

    def routes(self) -> list[Route]:
        """HTTP routes plugins register; anything but one :class:`Route` is refused alone."""
        routes: list[Route] = []
        for plugin, args in self.collect("register_http_routes"):
            if len(args) != 1 or not isinstance(args[0], Route):
                self._fail(
                    self._info_for(plugin), "register_http_routes", TypeError("expected a Route")
                )
                continue
            routes.append(args[0])
        return routes

    def named(self, hook: str) -> dict[str, Any]:
        """``register(name, thing)`` hooks (sources, rules, sinks, providers) as a dict.

        A registration that is not a name and a thing of the hook's kind (a
        callable; an :class:`~kerno_otel.contract.AIProvider` for providers) is
        that plugin's failure.
        """
        expected, fits = NAMED[hook]
        out: dict[str, Any] = {}
        owners = self.owners.setdefault(hook, {})
        for plugin, args in self.collect(hook):
            info = self._info_for(plugin)
            if len(args) != 2 or not isinstance(args[0], str) or not fits(args[1]):
                self._fail(info, hook, TypeError(f"expected register(name, {expected})"))
                continue
            problem = problem_of(hook, args[0], args[1], owners)
            if problem is not None:
                self._fail(info, hook, ValueError(problem))
                continue
            out[args[0]] = args[1]
            owners[args[0]] = info
        return out


def check_contributions(host: PluginHost) -> None:
    """Collect everything the plugins register, as the daemon would, so that each refused
    contribution is one of ``host.failures`` (for ``kerno-otel plugins``)."""
    host.redaction_rules()
    host.config_secrets()
    for hook in NAMED:
        host.named(hook)
    host.routes()


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
    host.event_types()
    return host, host.schemas
