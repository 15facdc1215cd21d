"""Redaction: every leak in an audit record's ``details`` becomes a ``[REDACTED:<kind>]``."""

from __future__ import annotations

import collections
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Final, NamedTuple

from kerno_otel.records import patterns as _patterns
from kerno_otel.records.catalogue import BUILTIN_TYPES, FieldPolicy
from kerno_otel.records.redact_extra import RedactionRule, _compile, _Compiled
from kerno_otel.records.redact_quick import _suspects
from kerno_otel.records.redact_rules import _PH_IP, _PH_PATH, _SUBS

__all__ = ["RedactionRule", "Redactor"]

_POLICIES: Final = ("ip", "path_top", "text")

#: Rounds of substitution before giving up on keeping any context: a replacement
#: can turn its neighbour into a new match ("pid=1pid=2"), so one pass is not enough.
_MAX_ROUNDS: Final = 6
#: Deeper ``details`` are refused: the schema never nests this far, and a cycle
#: must fail with a clear error rather than a RecursionError.
_MAX_DEPTH: Final = 128

# --- the redactor ------------------------------------------------------------------------------


def _policy_value(policy: str, value: str) -> str:
    """``value`` under an ``ip`` or ``path_top`` policy (the same object if it already complies)."""
    if policy == "ip":
        return value if value == _PH_IP else _PH_IP
    if policy == "path_top" and value.startswith("/"):
        top, _, rest = value[1:].partition("/")
        if rest and rest != _PH_PATH:
            return f"/{top}/{_PH_PATH}"
    return value


_POLICY_KIND: Final = {"ip": "ip", "path_top": "path"}

#: Strings already found clean are remembered (audit values repeat: providers, models,
#: endpoints, versions, cycle ids), up to this many of at most this length.
_CLEAN_MAX: Final = 4096
_CLEAN_MAX_LEN: Final = 256


class _Rules(NamedTuple):
    """What a redaction depends on besides the policies; replaced whole by ``add_rule``."""

    extra: tuple[_Compiled, ...]
    #: Strings that no rule of ``extra`` (nor any default one) changes.
    clean: set[str]


def _remember(clean: set[str], text: str) -> None:
    if len(text) <= _CLEAN_MAX_LEN:
        if len(clean) >= _CLEAN_MAX:
            clean.clear()
        clean.add(text)


def _all_clean(values: Iterable[Any], rules: _Rules, depth: int) -> bool:
    """Whether no string in ``values`` (nested dicts and lists included) needs a change.

    False means "not sure" as well: anything unusual is left to the walk.
    """
    clean = rules.clean
    extra = rules.extra
    for value in values:
        cls = type(value)
        if cls is str:
            if value in clean:
                continue
            if _suspects(value.lower()) or (extra and any(r.regex.search(value) for r in extra)):
                return False
            _remember(clean, value)
        elif cls is int or cls is float or cls is bool or value is None:
            continue
        elif cls is dict and depth < _MAX_DEPTH:
            if not _all_clean(value.values(), rules, depth + 1):
                return False
        elif (cls is list or cls is tuple) and depth < _MAX_DEPTH:
            if not _all_clean(value, rules, depth + 1):
                return False
        else:
            return False
    return True


class Redactor:
    """Removes leaks from audit ``details``: default rules, extra rules, per-field policies.

    Not locked: ``add_rule`` and ``set_policies`` swap whole tables, so a concurrent
    ``redact_*`` sees the old or the new set, never half of one.
    """

    def __init__(
        self,
        rules: Sequence[RedactionRule] = (),
        policies: Mapping[str, Mapping[str, FieldPolicy]] | None = None,
    ) -> None:
        #: Replacements by kind since construction (policies and extra rules included).
        self.counts: collections.Counter[str] = collections.Counter()
        self._rules = _Rules((), set())
        self._policies: dict[str, dict[str, FieldPolicy]] = {}
        #: type name -> the fields whose policy can change a value (ip, path_top).
        self._forced: dict[str, tuple[tuple[str, str], ...]] = {}
        if policies is None:
            policies = {name: t.policies for name, t in BUILTIN_TYPES.items()}
        for type_name, fields in policies.items():
            self.set_policies(type_name, fields)
        for rule in rules:
            self.add_rule(rule)

    def add_rule(self, rule: RedactionRule) -> None:
        """Add an extra rule (from config or a plugin); ValueError if it is unusable."""
        where = f"redaction rule {rule.kind!r}"
        compiled = _compile(rule, where)
        for other in self._rules.extra:
            for output in compiled.outputs():
                if other.regex.search(output):
                    raise ValueError(
                        f"{where}: its output {output!r} is matched by the rule "
                        f"{other.kind!r} ({other.regex.pattern!r})"
                    )
            for output in other.outputs():
                if compiled.regex.search(output):
                    raise ValueError(
                        f"{where}: 'pattern' {rule.pattern!r} matches {output!r}, "
                        f"the output of the rule {other.kind!r}"
                    )
        # A fresh set: what was clean under the old rules may not be under the new one.
        self._rules = _Rules((*self._rules.extra, compiled), set())

    def set_policies(self, type_name: str, policies: Mapping[str, FieldPolicy]) -> None:
        """Set (replace) the per-field policies of one event type."""
        for field, policy in policies.items():
            if policy not in _POLICIES:
                raise ValueError(
                    f"{type_name}.{field}: unknown redaction policy {policy!r} "
                    f"(expected one of {', '.join(_POLICIES)})"
                )
        table = dict(self._policies)
        table[type_name] = dict(policies)
        forced = dict(self._forced)
        forced[type_name] = tuple((f, p) for f, p in policies.items() if p != "text")
        self._policies = table
        self._forced = forced

    def redact_text(self, text: str) -> tuple[str, dict[str, int]]:
        """Free text with every leak replaced, and the replacements made by kind."""
        counts: dict[str, int] = {}
        clean = _scrub_text(text, counts, self._rules)
        if counts:
            self._count(counts)
        return clean, counts

    def redact_details(self, type_name: str, details: Mapping[str, Any]) -> dict[str, Any]:
        """``details`` with policies applied and every string scrubbed.

        The same object when nothing had to change; otherwise a new dict (the input is
        never modified). Dict keys are not scrubbed, only values.
        """
        rules = self._rules
        if type(details) is dict:
            forced = self._forced.get(type_name)
            if not forced:
                if _all_clean(details.values(), rules, 1):
                    return details
            else:
                done = _forced_fast(details, forced, rules)
                if done is not None:
                    out, counts = done
                    self._count(counts)
                    return out
        counts = {}
        out = _scrub_top(details, self._policies.get(type_name, {}), counts, rules)
        if counts:
            self._count(counts)
        return out

    def _count(self, counts: dict[str, int]) -> None:
        total = self.counts
        for kind, n in counts.items():
            total[kind] += n


def _forced_fast(
    details: dict[str, Any], forced: tuple[tuple[str, str], ...], rules: _Rules
) -> tuple[dict[str, Any], dict[str, int]] | None:
    """The common case of a type with ``ip``/``path_top`` fields: the policies change
    those fields and every other string is clean. None when that is not the case
    (the slow path then decides, with the same result where this one answers)."""
    changed: dict[str, str] = {}
    counts: dict[str, int] = {}
    for field, policy in forced:
        value = details.get(field)
        if isinstance(value, str):
            new = _policy_value(policy, value)
            if new is not value:
                changed[field] = new
                kind = _POLICY_KIND[policy]
                counts[kind] = counts.get(kind, 0) + 1
    if not changed:
        return (details, counts) if _all_clean(details.values(), rules, 1) else None
    if not _all_clean(changed.values(), rules, 1) or not _all_clean(
        (v for k, v in details.items() if k not in changed), rules, 1
    ):
        return None
    out = dict(details)
    out.update(changed)
    return out, counts


# --- slow path ---------------------------------------------------------------------------------
#
# Copies are made lazily, at the first change, so that whatever needs no change is shared
# with the input (and the input itself comes back when nothing changed).


def _scrub_top(
    details: Mapping[str, Any],
    policies: Mapping[str, FieldPolicy],
    counts: dict[str, int],
    rules: _Rules,
) -> dict[str, Any]:
    out: dict[str, Any] | None = None
    for key, value in details.items():
        new = value
        if isinstance(value, str):
            policy = policies.get(key)
            if policy is not None and policy != "text":
                new = _policy_value(policy, value)
                if new is not value:
                    kind = _POLICY_KIND[policy]
                    counts[kind] = counts.get(kind, 0) + 1
            new = _scrub_text(new, counts, rules)
        else:
            new = _scrub(value, counts, rules, 1)
        if new is not value:
            if out is None:
                out = dict(details)
            out[key] = new
    if out is not None:
        return out
    return details if isinstance(details, dict) else dict(details)


def _scrub(value: Any, counts: dict[str, int], rules: _Rules, depth: int) -> Any:
    if isinstance(value, str):
        return _scrub_text(value, counts, rules)
    if not isinstance(value, dict | list | tuple):
        return value
    if depth >= _MAX_DEPTH:
        raise ValueError(f"details nest deeper than {_MAX_DEPTH} levels (or hold a cycle)")
    if isinstance(value, dict):
        out_dict: dict[Any, Any] | None = None
        for key, item in value.items():
            new = _scrub(item, counts, rules, depth + 1)
            if new is not item:
                if out_dict is None:
                    out_dict = dict(value)
                out_dict[key] = new
        return value if out_dict is None else out_dict
    out_list: list[Any] | None = None
    for i, item in enumerate(value):
        new = _scrub(item, counts, rules, depth + 1)
        if new is not item:
            if out_list is None:
                out_list = list(value)
            out_list[i] = new
    if out_list is None:
        return value
    return tuple(out_list) if isinstance(value, tuple) else out_list


def _scrub_text(text: str, counts: dict[str, int], rules: _Rules) -> str:
    if text in rules.clean:
        return text
    bits = _suspects(text.lower())
    if not bits and not any(rule.regex.search(text) for rule in rules.extra):
        _remember(rules.clean, text)
        return text
    last = ""
    for _ in range(_MAX_ROUNDS):
        before = text
        for sub in _SUBS:
            if bits & sub.bit:
                text, n = sub.regex.subn(sub.repl, text)
                if n:
                    counts[sub.kind] = counts.get(sub.kind, 0) + n
                    last = sub.kind
        for rule in rules.extra:
            text, n = rule.apply(text)
            if n:
                counts[rule.kind] = counts.get(rule.kind, 0) + n
                last = rule.kind
        if text == before:
            return text
        bits = _suspects(text.lower())
        if not bits and not rules.extra:
            return text
    # Still changing: replacements keep making new matches of their neighbours
    # (only contrived input does this). Nothing of it is worth the risk.
    counts[last] = counts.get(last, 0) + 1
    return _patterns.placeholder(last)
