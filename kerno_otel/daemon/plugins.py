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

import hashlib
import traceback
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from importlib.metadata import EntryPoint, entry_points
from typing import Any, TextIO

import pluggy

from kerno_otel import hookspecs
from kerno_otel.config import load_config
from kerno_otel.contract import AIProvider, BPFProgram, PluginInfo
from kerno_otel.records.catalogue import BUILTIN_TYPES, EventType
from kerno_otel.records.redact import RedactionRule, Redactor
from kerno_otel.records.schema import SchemaSet

#: Scrubs what plugins' exceptions say before it reaches stderr (default rules only:
#: plugin rules are not known yet when loading fails).
_STDERR_REDACTOR = Redactor()


class PluginLoadError(Exception):
    """``plugins.strict`` is on and a plugin failed; the message names it, the hook and why."""


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
        """Event types contributed by plugins; a bad one is that plugin's failure."""
        types: list[EventType] = []
        seen: dict[str, str] = {}
        for plugin, args in self.collect("register_event_types"):
            info = self._info_for(plugin)
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
                info = self._info_for(plugin)
                self._fail(info, "register_redaction_rules", TypeError("expected a RedactionRule"))
        return rules

    def named(self, hook: str) -> dict[str, Any]:
        """``register(name, thing)`` hooks (sources, rules, sinks, providers) as a dict.

        A registration that is not a name and a thing of the hook's kind (a
        callable; an :class:`~kerno_otel.contract.AIProvider` for providers) is
        that plugin's failure.
        """
        expected, fits = _NAMED[hook]
        out: dict[str, Any] = {}
        for plugin, args in self.collect(hook):
            if len(args) != 2 or not isinstance(args[0], str) or not fits(args[1]):
                self._fail(
                    self._info_for(plugin), hook, TypeError(f"expected register(name, {expected})")
                )
                continue
            out[args[0]] = args[1]
        return out


#: The ``register(name, thing)`` hooks: what ``thing`` must be, and how to tell.
_NAMED: dict[str, tuple[str, Callable[[Any], bool]]] = {
    "register_sources": ("source factory", callable),
    "register_doctor_rules": ("rule", callable),
    "register_sinks": ("sink factory", callable),
    "register_ai_providers": ("provider", lambda thing: isinstance(thing, AIProvider)),
    "register_bpf_programs": ("BPF program", lambda thing: isinstance(thing, BPFProgram)),
}


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
