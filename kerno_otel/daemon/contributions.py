"""What each ``register(name, thing)`` hook takes: the kind of thing, how to tell, and the
checks beyond its type (a doctor rule's name and thresholds)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from kerno_otel.contract import AIProvider, BPFProgram, PluginInfo
from kerno_otel.doctor.thresholds import threshold_problem

#: The ``register(name, thing)`` hooks: what ``thing`` must be, and how to tell.
NAMED: dict[str, tuple[str, Callable[[Any], bool]]] = {
    "register_sources": ("source factory", callable),
    "register_doctor_rules": ("rule", callable),
    "register_sinks": ("sink factory", callable),
    "register_ai_providers": ("provider", lambda thing: isinstance(thing, AIProvider)),
    "register_bpf_programs": ("BPF program", lambda thing: isinstance(thing, BPFProgram)),
}


def _no_problem(name: str, thing: Any, owners: Mapping[str, PluginInfo]) -> str | None:
    return None


def _rule_problem(name: str, rule: Any, owners: Mapping[str, PluginInfo]) -> str | None:
    """Why a doctor rule cannot be taken (its name is taken, its ``thresholds`` are bad)."""
    if name in owners:
        return f"rule {name!r} is already registered by plugin {owners[name].name!r}"
    return threshold_problem(name, getattr(rule, "thresholds", None))


#: Checks beyond the type, for the ``register(name, thing)`` hooks that need them.
_THINGS_CHECK: dict[str, Callable[[str, Any, Mapping[str, PluginInfo]], str | None]] = {
    "register_doctor_rules": _rule_problem,
}


def problem_of(hook: str, name: str, thing: Any, owners: Mapping[str, PluginInfo]) -> str | None:
    """Why ``thing``, registered as ``name`` through ``hook``, cannot be taken; None if it can."""
    return _THINGS_CHECK.get(hook, _no_problem)(name, thing, owners)
