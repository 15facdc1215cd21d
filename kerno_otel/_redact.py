"""Redaction: every leak in an audit record's ``details`` becomes a ``[REDACTED:<kind>]``."""

from __future__ import annotations

import collections
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, NamedTuple

from kerno_otel import _patterns
from kerno_otel._catalogue import BUILTIN_TYPES, FieldPolicy

__all__ = ["RedactionRule", "Redactor"]

_POLICIES: Final = ("ip", "path_top", "text")
_KIND_RE: Final = re.compile(r"[a-z][a-z0-9_]*")
_RULE_KEYS: Final = ("kind", "pattern", "replacement")

_PH_IP: Final = _patterns.placeholder("ip")
_PH_PATH: Final = _patterns.placeholder("path")
_PH_PID: Final = _patterns.placeholder("pid")
_PH_EMAIL: Final = _patterns.placeholder("email")
_PH_SECRET: Final = _patterns.placeholder("secret")

#: Rounds of substitution before giving up on keeping any context: a replacement
#: can turn its neighbour into a new match ("pid=1pid=2"), so one pass is not enough.
_MAX_ROUNDS: Final = 6
#: Deeper ``details`` are refused: the schema never nests this far, and a cycle
#: must fail with a clear error rather than a RecursionError.
_MAX_DEPTH: Final = 128

# --- substitutions -----------------------------------------------------------------------------
#
# Each default kind gets a substitution regex of its own, written for Python's re only
# (lookbehind, groups), that matches everything the portable leak pattern in _patterns.py
# matches, and a bit more where that is harmless. Context a leak pattern consumes as a
# boundary (the space before an IP, "pid=", the URL scheme, "password=") is kept.
#
# Whitespace: a positive \s is widened with U+FEFF (whitespace to ECMA-262 but not to
# Python); inside negated classes only ASCII whitespace is excluded (whitespace to every
# engine). Either way the redactor removes at least what any validator would call a leak.
_WS: Final = r"[\s\ufeff]"
_NWS: Final = r" \t\n\r\f\v"
_H: Final = r"[0-9A-Fa-f]{1,4}"
_V4: Final = r"\.".join([_patterns._OCTET] * 4)
_LAST_OCTETS: Final = r"\.".join([_patterns._OCTET] * 3)
# The first octet of an IPv4 address not preceded by a digit or a dot, spelt so that every
# branch starts with a literal digit: re then jumps from digit to digit instead of trying
# the pattern at every position (2x faster). Same matches as (?<![0-9.])_OCTET.
_FIRST_OCTET: Final = "|".join(
    [
        "2(?<![0-9.]2)(?:5[0-5]|[0-4][0-9]|[0-9])?",
        "1(?<![0-9.]1)(?:[0-9][0-9]?)?",
        *(f"{d}(?<![0-9.]{d})[0-9]?" for d in "3456789"),
        "0(?<![0-9.]0)",
    ]
)
_ROOTS: Final = "|".join(re.escape(root) for root in _patterns.SENSITIVE_ROOTS)
_KEY: Final = (
    r"(?:[Pp][Aa][Ss][Ss][Ww](?:[Oo][Rr])?[Dd]|[Ss][Ee][Cc][Rr][Ee][Tt]"
    r"|[Aa][Pp][Ii]_?[Kk][Ee][Yy]|[Tt][Oo][Kk][Ee][Nn])"
)
_BEARER: Final = r"[Bb][Ee][Aa][Rr][Ee][Rr]"


class _Sub(NamedTuple):
    bit: int
    kind: str
    regex: re.Pattern[str]
    #: The placeholder, or a function keeping the context (the one group that matched).
    #: Not a "\\g<1>" template: re expands those in Python, several times slower.
    repl: str | Callable[[re.Match[str]], str]


def _keep(placeholder: str) -> Callable[[re.Match[str]], str]:
    def repl(match: re.Match[str]) -> str:
        return "".join(group for group in match.groups() if group) + placeholder

    return repl


_PEM, _URL, _KV, _BEARER_BIT, _TOKENS, _PATH, _EMAIL, _IP6, _IP4, _PID = (1 << i for i in range(10))

#: In application order: a PEM block or a URL's credentials go whole before the
#: narrower kinds can nibble at them; IPv6 (which may end in a dotted quad) before IPv4;
#: IPs before pids ("pid 10.0.0.1" is an address).
_SUBS: Final[tuple[_Sub, ...]] = (
    _Sub(
        _PEM,
        "secret",
        # The whole block; a block cut short loses everything after its header.
        re.compile(
            r"-----BEGIN [A-Z ]*PRIVATE KEY-----(?s:.*?)(?:-----END [A-Z ]*PRIVATE KEY-----|\Z)"
        ),
        _PH_SECRET,
    ),
    _Sub(
        _URL,
        "secret",
        # Keeps scheme and "@host"; starts at "://" so a long word without one is cheap.
        # An empty user name too ("redis://:pw@cache"), which the leak pattern misses.
        re.compile(rf"(?<=[A-Za-z0-9+.-])(://)[^/{_NWS}:@\[]*:[^/{_NWS}@\[]+@"),
        _keep(_PH_SECRET + "@"),
    ),
    _Sub(
        _KV,
        "secret",
        # Also the quoted forms ("password": "x") a log line or a repr carries, and a
        # "Bearer " inside the value goes with it.
        re.compile(
            rf"({_KEY}[\"']?{_WS}*[=:]{_WS}*[\"']?)(?:{_BEARER}{_WS}+)?"
            rf"[^{_NWS}\[,;&\"'][^{_NWS},;&\"']*"
        ),
        _keep(_PH_SECRET),
    ),
    _Sub(
        _BEARER_BIT,
        "secret",
        re.compile(rf"({_BEARER}{_WS}+)[A-Za-z0-9._~+/-]{{8,}}=*"),
        _keep(_PH_SECRET),
    ),
    _Sub(
        _TOKENS,
        "secret",
        re.compile(
            r"(?<![A-Za-z0-9])sk-[A-Za-z0-9_-]{16,}|(?:AKIA|ASIA)[0-9A-Z]{16}|gh[pousr]_[A-Za-z0-9]{30,}"
            r"|xox[abprs]-[A-Za-z0-9-]{10,}"
            r"|eyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}"
        ),
        _PH_SECRET,
    ),
    _Sub(
        _PATH,
        "path",
        # Keeps the root ("/home/", "/run/user/"); the rest of the path goes, up to
        # whitespace or a quote.
        re.compile(rf"(/(?:{_ROOTS})/)[^{_NWS}\[\]\"'][^{_NWS}\"']*"),
        _keep(_PH_PATH),
    ),
    _Sub(
        _EMAIL,
        "email",
        # Starts only where a local part starts: linear time on long words.
        re.compile(
            r"(?<![A-Za-z0-9._%+-])[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}"
        ),
        _PH_EMAIL,
    ),
    _Sub(
        _IP6,
        "ip",
        re.compile(
            r"(?<![0-9A-Za-z:])(?:"
            # An IPv4 tail ("::ffff:192.0.2.1") goes with its IPv6 head.
            rf"(?:{_H}:){{1,6}}:(?:{_H}:){{0,5}}{_V4}(?![0-9])"
            rf"|::(?:{_H}:){{0,5}}{_V4}(?![0-9])"
            rf"|(?:{_H}:){{6}}{_V4}(?![0-9])"
            rf"|(?:{_H}:){{7}}{_H}(?![0-9A-Za-z:])"
            rf"|(?:{_H}:){{1,6}}:(?:{_H}(?::{_H}){{0,5}})?(?![0-9A-Za-z:])"
            rf"|::{_H}(?::{_H}){{0,6}}(?![0-9A-Za-z:])"
            r")"
        ),
        _PH_IP,
    ),
    _Sub(_IP4, "ip", re.compile(rf"(?:{_FIRST_OCTET})\.{_LAST_OCTETS}(?![0-9])"), _PH_IP),
    _Sub(
        _PID,
        "pid",
        # The leak pattern wants a non-word character before "pid"; a digit is allowed
        # here too so that "pid=1pid=2" goes in one pass.
        re.compile(rf"(?:(?<![A-Za-z_])([Pp][Ii][Dd][=: ]{_WS}*)|(/proc/))[0-9]+"),
        _keep(_PH_PID),
    ),
)

# --- the quick test ----------------------------------------------------------------------------
#
# Python's re tries a many-branch alternation at every position (the leak patterns take
# ~100 µs on a 200-character string), so the hot path asks cheap questions first: is a
# character or a word there in the lowercased text (a C scan each), and only then a short
# regex with a literal prefix. Each question must hold whenever its substitution above
# can match (tests check this), so "no bit set" means "nothing to do". Lowercasing only
# ever adds matches: no character lowercases to ASCII punctuation or whitespace.
_S_URL: Final = re.compile(rf"://[^/{_NWS}:@\[]*:[^/{_NWS}@\[]+@")
_S_KV: Final = re.compile(rf"(?:passw(?:or)?d|secret|api_?key|token)[\"']?{_WS}*[=:]")
_S_BEARER: Final = re.compile(rf"bearer{_WS}")
_S_SK: Final = re.compile(r"sk-[a-z0-9_-]{16}")
_S_AWS: Final = re.compile(r"(?:akia|asia)[0-9a-z]{16}")
_S_GH: Final = re.compile(r"gh[pousr]_[a-z0-9]{30}")
_S_XOX: Final = re.compile(r"xox[abprs]-[a-z0-9-]{10}")
_S_JWT: Final = re.compile(r"eyj[a-z0-9_-]{5,}\.[a-z0-9_-]{5,}\.[a-z0-9_-]{5}")
_S_PATH: Final = re.compile(rf"/(?:{_ROOTS.lower()})/[^{_NWS}\[\]\"']")
_S_EMAIL: Final = re.compile(r"@[a-z0-9-]+(?:\.[a-z0-9-]+)*\.[a-z]{2}")
_S_IP6: Final = re.compile(r":[0-9a-f]{1,4}:[0-9a-f]{1,4}:[0-9a-f]{1,4}:")
_S_IP4: Final = re.compile(r"\.[0-9]{1,3}\.[0-9]{1,3}\.[0-9]")
# A digit must follow (as in the substitution): "pid=[REDACTED:pid]" is not suspect,
# so a redacted string does not pay for a second round.
_S_PID: Final = re.compile(rf"pid[=: ]{_WS}*[0-9]")
_S_PROC: Final = re.compile(r"/proc/[0-9]")


def _suspects(low: str) -> int:
    """The bits of the substitutions that may match the text whose ``lower()`` is ``low``."""
    if low.isalnum():  # only an AWS key id is made of letters and digits alone
        if len(low) >= 20 and ("akia" in low or "asia" in low) and _S_AWS.search(low):
            return _TOKENS
        return 0
    bits = 0
    if "/" in low:
        if _S_PATH.search(low):
            bits |= _PATH
        if "/proc/" in low and _S_PROC.search(low):
            bits |= _PID
        if "://" in low and _S_URL.search(low):
            bits |= _URL
    if "@" in low and _S_EMAIL.search(low):
        bits |= _EMAIL
    if "-" in low:
        if "-----begin" in low:
            bits |= _PEM
        if ("sk-" in low and _S_SK.search(low)) or ("xox" in low and _S_XOX.search(low)):
            bits |= _TOKENS
    if "_" in low and "gh" in low and _S_GH.search(low):
        bits |= _TOKENS
    if "." in low:
        if "eyj" in low and _S_JWT.search(low):
            bits |= _TOKENS
        if _S_IP4.search(low):
            bits |= _IP4
    if len(low) >= 20 and ("akia" in low or "asia" in low) and _S_AWS.search(low):
        bits |= _TOKENS
    colon = ":" in low
    if colon and ("::" in low or _S_IP6.search(low)):
        bits |= _IP6
    if (
        (colon or "=" in low)
        and ("token" in low or "passw" in low or "secret" in low or "api" in low)
        and _S_KV.search(low)
    ):
        bits |= _KV
    if "pid" in low and _S_PID.search(low):
        bits |= _PID
    if "bearer" in low and _S_BEARER.search(low):
        bits |= _BEARER_BIT
    return bits


# --- extra rules -------------------------------------------------------------------------------


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
            self.counts.update(counts)
        return clean, counts

    def redact_details(self, type_name: str, details: Mapping[str, Any]) -> dict[str, Any]:
        """``details`` with policies applied and every string scrubbed.

        The same object when nothing had to change; otherwise a new dict (the input is
        never modified). Dict keys are not scrubbed, only values.
        """
        rules = self._rules
        if type(details) is dict:
            for field, policy in self._forced.get(type_name, ()):
                value = details.get(field)
                if isinstance(value, str) and _policy_value(policy, value) is not value:
                    break
            else:
                if _all_clean(details.values(), rules, 1):
                    return details
        counts: dict[str, int] = {}
        out = _scrub_top(details, self._policies.get(type_name, {}), counts, rules)
        if counts:
            self.counts.update(counts)
        return out


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
