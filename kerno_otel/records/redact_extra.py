"""Extra redaction rules (``audit.redaction``, and plugins' ``register_redaction_rules``):
each checked on its own and compiled before it is used, so a bad one fails at load."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final, NamedTuple

from kerno_otel.records import patterns as _patterns
from kerno_otel.records.redact_quick import _suspects
from kerno_otel.records.redact_rules import _SUBS

_KIND_RE: Final = re.compile(r"[a-z][a-z0-9_]*")
_RULE_KEYS: Final = ("kind", "pattern", "replacement")


@dataclass(frozen=True)
class RedactionRule:
    """One extra redaction rule: what ``pattern`` matches is replaced and counted under ``kind``."""

    kind: str
    pattern: str
    #: The text left in place of a match; default ``[REDACTED:<kind>]``.
    replacement: str | None = None

    @classmethod
    def from_config(cls, obj: object, where: str) -> RedactionRule:
        """Parse one entry of the ``audit.redaction`` list; ``where`` names it in errors."""
        if not isinstance(obj, Mapping):
            raise ValueError(
                f"{where}: expected a mapping {{kind, pattern, replacement?}}, "
                f"got {type(obj).__name__}"
            )
        unknown = sorted(str(key) for key in obj if key not in _RULE_KEYS)
        if unknown:
            raise ValueError(
                f"{where}: unknown key {unknown[0]!r} (expected kind, pattern, replacement)"
            )
        for key in ("kind", "pattern"):
            if key not in obj:
                raise ValueError(f"{where}: missing {key!r}")
        rule = cls(obj["kind"], obj["pattern"], obj.get("replacement"))
        _compile(rule, where)  # types, regex and replacement: fail at load, not at first use
        return rule


class _Compiled(NamedTuple):
    kind: str
    regex: re.Pattern[str]
    text: str

    def outputs(self) -> tuple[str, ...]:
        """Its replacement and its placeholder (what is left when redaction does not settle)."""
        placeholder = _patterns.placeholder(self.kind)
        return (self.text,) if self.text == placeholder else (self.text, placeholder)

    def apply(self, text: str) -> tuple[str, int]:
        """``text`` with every non-empty match replaced, and how many there were."""
        pieces: list[str] = []
        pos = count = 0
        for match in self.regex.finditer(text):
            start, end = match.span()
            if start == end:  # a lookaround-only pattern can still match nothing somewhere
                continue
            pieces += (text[pos:start], self.text)
            pos = end
            count += 1
        if not count:
            return text, 0
        pieces.append(text[pos:])
        return "".join(pieces), count


# Strings that hold every context in which an empty match is plausible.
_EMPTY_PROBES: Final = ("", " ", "a", "0", "_", "a a", "a-b.c/d:e@f", "\n")


def _compile(rule: RedactionRule, where: str) -> _Compiled:
    """Check one rule on its own and compile it; ValueError naming ``where`` if it is unusable."""
    for key in _RULE_KEYS:
        value = getattr(rule, key)
        if not isinstance(value, str) and not (key == "replacement" and value is None):
            raise ValueError(f"{where}: {key!r} must be a string, got {type(value).__name__}")
    if not _KIND_RE.fullmatch(rule.kind):
        # It names a placeholder and a key of ai.call's "redactions" (schema: ^[a-z][a-z0-9_]*$).
        raise ValueError(
            f"{where}: 'kind' {rule.kind!r} must be lowercase letters, digits and _, "
            "starting with a letter"
        )
    try:
        regex = re.compile(rule.pattern)
    except re.error as exc:
        raise ValueError(
            f"{where}: 'pattern' {rule.pattern!r} is not a valid regex: {exc}"
        ) from None
    for probe in _EMPTY_PROBES:
        if any(m.start() == m.end() for m in regex.finditer(probe)):
            raise ValueError(f"{where}: 'pattern' {rule.pattern!r} matches the empty string")
    text = _patterns.placeholder(rule.kind) if rule.replacement is None else rule.replacement
    compiled = _Compiled(rule.kind, regex, text)
    for output in compiled.outputs():
        leak = _patterns.find_leak(output)
        if leak is None and _suspects(output.lower()):
            leak = next((s.kind for s in _SUBS if s.regex.search(output)), None)
        if leak is not None:
            what = "'replacement'" if output == rule.replacement else "placeholder"
            raise ValueError(f"{where}: {what} {output!r} would itself be redacted as {leak}")
    for output in (*map(_patterns.placeholder, _patterns.LEAK_PATTERNS), *compiled.outputs()):
        if regex.search(output):
            raise ValueError(
                f"{where}: 'pattern' {rule.pattern!r} matches {output!r}, "
                "so redacting twice would not be a no-op"
            )
    return compiled
