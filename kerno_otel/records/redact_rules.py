"""The default redaction table: one substitution per leak kind, and the quick test before it.

``_SUBS`` holds, in application order, a regex per default kind (Python's re only) that
removes at least what the portable leak patterns in ``patterns.py`` find; ``_suspects``
says cheaply which of them may match a string, so clean text skips them all. The
redactor (``_redact.py``) applies both.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Final, NamedTuple

from kerno_otel.records import patterns as _patterns

_PH_IP: Final = _patterns.placeholder("ip")
_PH_PATH: Final = _patterns.placeholder("path")
_PH_PID: Final = _patterns.placeholder("pid")
_PH_EMAIL: Final = _patterns.placeholder("email")
_PH_SECRET: Final = _patterns.placeholder("secret")

# --- substitutions -----------------------------------------------------------------------------
#
# Each default kind gets a substitution regex of its own, written for Python's re only
# (lookbehind, groups), that matches everything the portable leak pattern in patterns.py
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
    r"(?:[Pp][Aa][Ss][Ss][Ww](?:[Oo][Rr])?[Dd]|[Pp][Ww][Dd]"
    r"|[Ss][Ee][Cc][Rr][Ee][Tt](?:_?[Aa][Cc][Cc][Ee][Ss][Ss])?(?:[_-]?[Kk][Ee][Yy])?"
    r"|[Rr][Oo][Uu][Tt][Ii][Nn][Gg]_?[Kk][Ee][Yy]"
    r"|[Pp][Rr][Ii][Vv][Aa][Tt][Ee][_-]?[Kk][Ee][Yy]"
    r"|[Cc][Rr][Ee][Dd][Ee][Nn][Tt][Ii][Aa][Ll][Ss]?"
    r"|[Aa][Pp][Ii][_-]?[Kk][Ee][Yy]|[Tt][Oo][Kk][Ee][Nn])"
)
_HOOKS: Final = "|".join(_patterns.WEBHOOK_HOSTS)
_KERNEL: Final = "|".join(
    re.escape(p) for p in (*_patterns.KERNEL_PATHS, *_patterns.RECORD_POINTERS)
)
# Multi-part sensitive roots ("/run/user/") are the _PATH substitution's, which runs
# next: the general one leaves them alone rather than cut them shorter.
_DEEP_ROOTS: Final = "|".join(re.escape(r) for r in _patterns.SENSITIVE_ROOTS if "/" in r)
# An absolute path starts at a "/" that does not continue a word, a number, a URL or
# another path ("a/b", "3/4", "http://host/x" are not paths), or right after "file://".
_PATH_START: Final = r"(?:(?<![A-Za-z0-9._~/\\-])|(?<=[Ff][Ii][Ll][Ee]://))/"
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


(
    _PEM,
    _URL,
    _HOOK,
    _KV,
    _BEARER_BIT,
    _AWS_SECRET,
    _TOKENS,
    _PATH,
    _ANY_PATH,
    _EMAIL,
    _IP6,
    _IP4,
    _PID,
) = (1 << i for i in range(13))

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
        _HOOK,
        "secret",
        # The host stays (a reviewer sees where findings went), the path is the secret.
        re.compile(rf"((?:{_HOOKS})/)[^{_NWS}\[\]\"'<>][^{_NWS}\"'<>]*"),
        _keep(_PH_SECRET),
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
        # "Basic" only after "Authorization:": alone it is an English word.
        re.compile(
            rf"((?:{_BEARER}|[Aa][Uu][Tt][Hh][Oo][Rr][Ii][Zz][Aa][Tt][Ii][Oo][Nn]:{_WS}*"
            rf"[Bb][Aa][Ss][Ii][Cc]){_WS}+)[A-Za-z0-9._~+/-]{{8,}}=*"
        ),
        _keep(_PH_SECRET),
    ),
    _Sub(
        _AWS_SECRET,
        "secret",
        # An AWS secret access key: 40 characters of base64 standing alone, after its
        # access key id and at most three short words ("AKIA… wJalr…", "AKIA…:wJalr…",
        # "AKIA…, secret wJalr…"). The id is kept here; _TOKENS removes it next.
        re.compile(
            r"((?:AKIA|ASIA)[0-9A-Z]{16}[^A-Za-z0-9/+=]{1,3}"
            r"(?:[A-Za-z_]{1,20}[^A-Za-z0-9/+=]{1,3}){0,3})"
            r"[A-Za-z0-9/+]{40}(?![A-Za-z0-9/+=])"
        ),
        _keep(_PH_SECRET),
    ),
    _Sub(
        _TOKENS,
        "secret",
        re.compile(
            r"(?<![A-Za-z0-9])sk-[A-Za-z0-9_-]{16,}|(?:AKIA|ASIA)[0-9A-Z]{16}|gh[pousr]_[A-Za-z0-9]{30,}"
            r"|(?:xox[abprs]|xapp)-[A-Za-z0-9-]{10,}"
            # Google API keys, GitLab and fine-grained GitHub tokens, Stripe and npm keys.
            r"|AIza[0-9A-Za-z_-]{35,}|glpat-[A-Za-z0-9_-]{20,}|github_pat_[A-Za-z0-9_]{22,}"
            r"|(?<![A-Za-z0-9])[rs]k_(?:live|test)_[A-Za-z0-9]{16,}|npm_[A-Za-z0-9]{36}"
            r"|eyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}"
        ),
        _PH_SECRET,
    ),
    _Sub(
        _ANY_PATH,
        "path",
        # Any other absolute path keeps its top directory ("/etc/[REDACTED:path]"),
        # except the kernel paths BPF errors need. It ends at a ":" as well, so that
        # "FILE:LINE: why" keeps its line number.
        re.compile(
            rf"({_PATH_START}(?!(?:{_KERNEL}|{_DEEP_ROOTS})/)[A-Za-z0-9._-]+/)"
            rf"[^{_NWS}\[\]\"':][^{_NWS}\"':]*"
        ),
        _keep(_PH_PATH),
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
_S_KV: Final = re.compile(
    r"(?:passw(?:or)?d|pwd|secret(?:_?access)?(?:[_-]?key)?|routing_?key|private[_-]?key"
    rf"|credentials?|api[_-]?key|token)[\"']?{_WS}*[=:]"
)
_S_BEARER: Final = re.compile(rf"(?:bearer|authorization:{_WS}*basic){_WS}")
_S_SK: Final = re.compile(r"sk-[a-z0-9_-]{16}")
_S_AWS: Final = re.compile(r"(?:akia|asia)[0-9a-z]{16}")
_S_GH: Final = re.compile(r"gh[pousr]_[a-z0-9]{30}")
_S_XOX: Final = re.compile(r"(?:xox[abprs]|xapp)-[a-z0-9-]{10}")
_S_MORE: Final = re.compile(
    r"aiza[0-9a-z_-]{35}|glpat-[a-z0-9_-]{20}|github_pat_[a-z0-9_]{22}"
    r"|[rs]k_(?:live|test)_[a-z0-9]{16}|npm_[a-z0-9]{36}"
)
_S_JWT: Final = re.compile(r"eyj[a-z0-9_-]{5,}\.[a-z0-9_-]{5,}\.[a-z0-9_-]{5}")
_S_PATH: Final = re.compile(rf"/(?:{_ROOTS.lower()})/[^{_NWS}\[\]\"']")
_S_ANY_PATH: Final = re.compile(
    rf"{_PATH_START.lower()}(?!(?:{_KERNEL.lower()}|{_DEEP_ROOTS.lower()})/)[a-z0-9._-]+/"
    rf"[^{_NWS}\[\]\"':]"
)
_S_HOOK: Final = re.compile(rf"(?:{_HOOKS.lower()})/[^{_NWS}\[\]\"'<>]")
_S_EMAIL: Final = re.compile(r"@[a-z0-9-]+(?:\.[a-z0-9-]+)*\.[a-z]{2}")
_S_IP6: Final = re.compile(r":[0-9a-f]{1,4}:[0-9a-f]{1,4}:[0-9a-f]{1,4}:")
_S_IP4: Final = re.compile(r"\.[0-9]{1,3}\.[0-9]{1,3}\.[0-9]")
# A digit must follow (as in the substitution): "pid=[REDACTED:pid]" is not suspect,
# so a redacted string does not pay for a second round.
_S_PID: Final = re.compile(rf"pid[=: ]{_WS}*[0-9]")
_S_PROC: Final = re.compile(r"/proc/[0-9]")


def _suspects(low: str) -> int:
    """The bits of the substitutions that may match the text whose ``lower()`` is ``low``."""
    if low.isalnum():  # only an AWS key id or a Google API key is letters and digits alone
        if len(low) >= 20 and ("akia" in low or "asia" in low) and _S_AWS.search(low):
            return _TOKENS | _AWS_SECRET
        if "aiza" in low and _S_MORE.search(low):
            return _TOKENS
        return 0
    bits = 0
    if "/" in low:
        if _S_PATH.search(low):
            bits |= _PATH
        if _S_ANY_PATH.search(low):
            bits |= _ANY_PATH
        if ".com/" in low and _S_HOOK.search(low):
            bits |= _HOOK
        if "/proc/" in low and _S_PROC.search(low):
            bits |= _PID
        if "://" in low and _S_URL.search(low):
            bits |= _URL
    if "@" in low and _S_EMAIL.search(low):
        bits |= _EMAIL
    if "-" in low:
        if "-----begin" in low:
            bits |= _PEM
        if ("sk-" in low and _S_SK.search(low)) or (
            ("xox" in low or "xapp" in low) and _S_XOX.search(low)
        ):
            bits |= _TOKENS
    if (
        "aiza" in low
        or ("-" in low and "glpat" in low)
        or (
            "_" in low and ("_pat_" in low or "k_live_" in low or "k_test_" in low or "npm_" in low)
        )
    ) and _S_MORE.search(low):
        bits |= _TOKENS
    if "_" in low and "gh" in low and _S_GH.search(low):
        bits |= _TOKENS
    if "." in low:
        if "eyj" in low and _S_JWT.search(low):
            bits |= _TOKENS
        if _S_IP4.search(low):
            bits |= _IP4
    if len(low) >= 20 and ("akia" in low or "asia" in low) and _S_AWS.search(low):
        bits |= _TOKENS | _AWS_SECRET
    colon = ":" in low
    if colon and ("::" in low or _S_IP6.search(low)):
        bits |= _IP6
    if (
        (colon or "=" in low)
        and (
            "token" in low
            or "passw" in low
            or "secret" in low
            or "api" in low
            or "routing" in low
            or "private" in low
            or "credential" in low
            or "pwd" in low
        )
        and _S_KV.search(low)
    ):
        bits |= _KV
    if "pid" in low and _S_PID.search(low):
        bits |= _PID
    if ("bearer" in low or "basic" in low) and _S_BEARER.search(low):
        bits |= _BEARER_BIT
    return bits
