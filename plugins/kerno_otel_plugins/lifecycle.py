"""The lifecycle plugin: daemon.start, daemon.stop, daemon.panic and config.reload records."""

from __future__ import annotations

import os
from typing import Any

from kerno_otel import Config, __version__, hookimpl
from kerno_otel.hookspecs import ConfigDiff, DaemonContext

#: Stable plugin name (the entry point's name).
NAME = "lifecycle"


def _top_dir(path: str | None) -> str:
    """A config path reduced to its top directory: ``/etc/kerno/k.yaml`` -> ``/etc``."""
    if not path:
        return "(defaults)"
    absolute = os.path.abspath(path)
    top = absolute.split("/", 2)[1]
    return f"/{top}" if top else "/"


@hookimpl
def daemon_startup(context: DaemonContext) -> None:
    context.audit.emit(
        "daemon.start",
        details={
            "version": __version__,
            "config_path": _top_dir(context.config.source),
            "plugins": [{"name": p.name, "version": p.version} for p in context.plugins],
        },
    )


@hookimpl
def daemon_shutdown(context: DaemonContext, reason: str, uptime_s: float) -> None:
    context.audit.emit(
        "daemon.stop",
        details={"version": __version__, "reason": reason, "uptime_s": round(uptime_s, 3)},
        outcome="success" if reason != "error" else "failure",
    )


@hookimpl
def daemon_panic(context: DaemonContext, exception_type: str, panic_digest: str) -> None:
    context.audit.emit(
        "daemon.panic",
        details={
            "version": __version__,
            "exception_type": exception_type,
            "panic_digest": panic_digest,
        },
        outcome="failure",
    )


def _scalar(value: Any) -> Any:
    """before/after values in the record: scalars as they are, anything else as compact text."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    import json

    return json.dumps(value, sort_keys=True, default=str)


@hookimpl
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
    details: dict[str, Any] = {
        "path": path or "(defaults)",
        "source": source,
        "uid": uid,
        "changed_fields": list(diff.changed) if diff else [],
        "applied": list(diff.applied) if diff else [],
        "restart_required": list(diff.restart_required) if diff else [],
        "changes": [
            {"field": key, "before": _scalar(before), "after": _scalar(after)}
            for key, before, after in (diff.changes if diff else ())
        ],
    }
    if error is not None:
        details["error"] = error
    context.audit.emit(
        "config.reload",
        actor=f"config/{source}",
        details=details,
        outcome="failure" if error is not None else "success",
        severity="WARN" if error is not None else "INFO",
    )
