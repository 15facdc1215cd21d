"""What a plugin's failure is: the record, its one stderr line, and the errors that stop a start.

A failure never carries the traceback, only its SHA-256; its message is the
exception's first line, cut at 200 characters and scrubbed by the default
redaction rules before it reaches stderr or ``plugins --json`` (its type's name
too: a plugin names its own classes). An exception whose ``str()`` raises is a
failure all the same, its message ``<str() failed>``: nothing a plugin raises
stops its ``plugin.error``.
"""

from __future__ import annotations

import hashlib
import traceback
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from kerno_otel.contract import PluginInfo
from kerno_otel.records.redact import Redactor

#: Scrubs what plugins' exceptions say before it reaches stderr (default rules only:
#: plugin rules are not known yet when loading fails).
_STDERR_REDACTOR = Redactor()


class PluginLoadError(Exception):
    """``plugins.strict`` is on and a plugin failed; the message names it, the hook and why."""


class PluginNotFoundError(LookupError):
    """``KERNO_OTEL_PLUGINS`` or ``plugins.enabled`` names a plugin nothing installed provides."""


#: The distribution recorded for a plugin that was asked for but is not installed.
NOT_INSTALLED = "not-installed"


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
    try:
        text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    except Exception:  # a plugin's exception that even the traceback module cannot print
        text = f"{type(exc).__module__}.{type(exc).__qualname__}"
    return "sha256:" + hashlib.sha256(text.encode("utf-8", "replace")).hexdigest()


def exception_line(exc: BaseException, limit: int = 200) -> str:
    """The first line of ``str(exc)``, at most ``limit`` characters, NOT scrubbed; never raises.

    A plugin's exception may define ``__str__`` (or ``__repr__``) that raises or
    returns something that is not a string: that is ``<str() failed>``.
    """
    try:
        text = str(exc)
    except Exception:
        return "<str() failed>"
    return text.splitlines()[0][:limit] if text.strip() else ""


def scrubbed(text: str) -> str:
    """``text`` with the default redaction rules applied (for stderr, before any config)."""
    return _STDERR_REDACTOR.redact_text(text)[0]


def failure_of(info: PluginInfo, hook: str, exc: BaseException) -> PluginFailure:
    """The failure of plugin ``info`` in ``hook`` (or a rule: ``rule:<name>``), text scrubbed."""
    # The exception's text is the plugin's: it may quote a token or an address; so may the
    # name of its class.
    return PluginFailure(
        info.name,
        info.distribution,
        info.version,
        hook,
        scrubbed(type(exc).__name__),
        _digest(exc),
        scrubbed(exception_line(exc)),
    )


def failure_line(failure: PluginFailure) -> str:
    """The one stderr line for ``failure``: the plugin, its distribution, where and why."""
    return (
        f"kerno-otel: plugin {failure.plugin!r} ({failure.distribution} {failure.version}) "
        f"failed in {failure.hook}: {failure.error_type}: {failure.message}\n"
    )


def record_failures(
    audit: Any, failures: Iterable[PluginFailure], fold: Mapping[str, Any] | None = None
) -> None:
    """One ``plugin.error`` record per failure (``audit`` is the :class:`AuditLog`).

    ``fold`` (``suppressed``, ``first_ts``, ``last_ts``) is added to the details of a
    record that stands for folded repeats (:mod:`kerno_otel.daemon.failure_fold`). Such a
    record carries no ``trace_id``/``span_id``: its failures happened in earlier cycles'
    traces, and the span active when it is written (a later cycle's rule that worked, or
    raised something else) is not where any of them did.
    """
    # 0 and 0: no ids, whatever span is active (None would take the active span's).
    ids: dict[str, int] = {"trace_id": 0, "span_id": 0} if fold else {}
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
                **(fold or {}),
            },
            outcome="failure",
            **ids,
        )
