"""The quick test before the redaction table: which substitutions may match a string.

Python's re tries a many-branch alternation at every position (the leak patterns take
~100 µs on a 200-character string), so the hot path asks cheap questions first: is a
character or a word there in the lowercased text (a C scan each), and only then a short
regex with a literal prefix. Each question must hold whenever its substitution in
``redact_rules`` can match (tests check this), so "no bit set" means "nothing to do".
Lowercasing only ever adds matches: no character lowercases to ASCII punctuation or
whitespace.
"""

from __future__ import annotations

import re
from typing import Final

from kerno_otel.records.redact_rules import (
    _ANY_PATH,
    _AWS_BARE,
    _AWS_SECRET,
    _BEARER_BIT,
    _COOKIE,
    _DEEP_ROOTS,
    _EMAIL,
    _FLAG,
    _HOOK,
    _HOOKS,
    _IP4,
    _IP6,
    _KERNEL,
    _KV,
    _NWS,
    _PATH,
    _PEM,
    _PID,
    _ROOTS,
    _SIG,
    _TILDE,
    _TOKENS,
    _URL,
    _WS,
)

_S_URL: Final = re.compile(rf"://[^/{_NWS}:@\[]*:[^/{_NWS}@\[]+@")
_S_KV: Final = re.compile(
    r"(?:passw(?:or)?d|pwd|passphrase|secret(?:_?access)?(?:[_-]?key)?|routing_?key|private[_-]?key"
    rf"|credentials?|api[_-]?key|token|accountkey|sharedaccesskey|[_-]pass)[\"']?{_WS}*[=:]"
)
_S_BEARER: Final = re.compile(rf"bearer(?:{_WS}|%20)|authorization[\"']?{_WS}*[:=]")
# Looser than the substitution (any "-p", "-u", "--user" or secret-named flag): those
# are rare enough in audit text for the substitution to decide.
# The "-" first, then the look behind it: re then jumps from "-" to "-" (6x faster).
_S_FLAG: Final = re.compile(
    r"-(?<![\w-]-)-?(?:[a-z0-9_-]*(?:passw|passphrase|pwd|secret|token|api|access|credential"
    r"|pass)|p|u)"
)
_S_SIG: Final = re.compile(
    rf"(?:[?&](?:sig|(?:x-(?:amz|goog)-)?signature)|,{_WS}*signature)=[^{_NWS}&#\[\"']"
)
_S_COOKIE: Final = re.compile(rf"cookie:{_WS}*[^{_NWS}\[\"';=:]+=")
# A run of 40 or more with a character that is not hex (so a sha256 digest is not
# suspect): lowercasing can lengthen a run, never cut one short, and only adds "k" or
# "i" in front of one ("\u212a", "\u0130"), both not hex.
_S_AWS_BARE: Final = re.compile(r"(?<![a-z0-9/+])(?=[a-z0-9/+]{0,39}[g-z/+])[a-z0-9/+]{40}")
# The same without the lookarounds, 2x cheaper, to ask first: most text has no such run.
_S_RUN40: Final = re.compile(r"[a-z0-9/+]{40}")
_S_TILDE: Final = re.compile(r"~(?:/[^ \t\n\r\f\v\[\]\"']|[a-z_][a-z0-9._-]*/)")
_S_SK: Final = re.compile(r"sk-[a-z0-9_-]{16}")
_S_AWS: Final = re.compile(r"(?:akia|asia)[0-9a-z]{16}")
_S_GH: Final = re.compile(r"gh[pousr]_[a-z0-9]{30}")
_S_XOX: Final = re.compile(r"(?:xox[abprs]|xapp)-[a-z0-9-]{10}")
_S_MORE: Final = re.compile(
    r"aiza[0-9a-z_-]{35}|glpat-[a-z0-9_-]{20}|github_pat_[a-z0-9_]{22}"
    r"|[rs]k_(?:live|test)_[a-z0-9]{16}|npm_[a-z0-9]{36}|hf_[a-z0-9]{30}"
)
# Lowercased _JWT_PYTHON: lowercasing only lengthens a word (a Kelvin sign becomes "k").
_S_JWT: Final = re.compile(
    r"(?<![a-z0-9_-])(?=[a-z0-9_-]*?eyj[a-z0-9_-]{5})[a-z0-9_-]+\.[a-z0-9_-]{5,}\.[a-z0-9_-]{5}"
)
_S_PATH: Final = re.compile(rf"/(?:{_ROOTS.lower()})/[^{_NWS}\[\]\"']")
# _PATH_START lowercased, but a "k" before the "/" does not rule a path out: it may be a
# Kelvin sign ("\u212a/etc/shadow"), which is no letter to the substitution.
_S_PATH_START: Final = r"(?:(?<![a-jl-z0-9._~/\\-])|(?<=file://))/"
_S_ANY_PATH: Final = re.compile(
    rf"{_S_PATH_START}(?!(?:{_KERNEL.lower()}|{_DEEP_ROOTS.lower()})/)[a-z0-9._-]+/"
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
    if low.isalnum():  # only AWS keys or a Google API key are letters and digits alone
        bare = _AWS_BARE if len(low) >= 40 and _S_AWS_BARE.search(low) else 0
        if len(low) >= 20 and ("akia" in low or "asia" in low) and _S_AWS.search(low):
            return bare | _TOKENS | _AWS_SECRET
        if "aiza" in low and _S_MORE.search(low):
            return bare | _TOKENS
        return bare
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
    if "sig" in low and "=" in low and _S_SIG.search(low):
        bits |= _SIG
    if "cookie" in low and _S_COOKIE.search(low):
        bits |= _COOKIE
    if "~" in low and _S_TILDE.search(low):
        bits |= _TILDE
    if len(low) >= 40 and _S_RUN40.search(low) and _S_AWS_BARE.search(low):
        bits |= _AWS_BARE
    if "@" in low and _S_EMAIL.search(low):
        bits |= _EMAIL
    if "-" in low:
        if _S_FLAG.search(low):
            bits |= _FLAG
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
            "_" in low
            and (
                "_pat_" in low
                or "k_live_" in low
                or "k_test_" in low
                or "npm_" in low
                or "hf_" in low
            )
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
            or "pass" in low
            or "secret" in low
            or "api" in low
            or "routing" in low
            or "private" in low
            or "credential" in low
            or "pwd" in low
            or "accountkey" in low
            or "accesskey" in low
        )
        and _S_KV.search(low)
    ):
        bits |= _KV
    if "pid" in low and _S_PID.search(low):
        bits |= _PID
    if ("bearer" in low or "authorization" in low) and _S_BEARER.search(low):
        bits |= _BEARER_BIT
    return bits
