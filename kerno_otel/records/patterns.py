"""What must never appear in an audit record: the leak patterns shared by redaction and schema.

One table, two users. The redactor (``_redact.py``) replaces every match of these
patterns; the published JSON Schema (``common.schema.json``) forbids them in the
string fields that must stay clean, so a redaction bug becomes a validation
failure instead of a leak. Every pattern here must therefore mean the same thing
to Python's ``re``, to the Rust regex engine behind jsonschema-rs and to
ECMA-262 (what a third-party JSON Schema validator uses): no inline flags, no
possessive quantifiers, no ``\\Z``, no ``\\s`` (Python's differs from the
others'; ASCII whitespace is spelled out); case-insensitivity is spelled out with
character classes.

A redaction always leaves a placeholder of the form ``[REDACTED:<kind>]`` (paths
keep their top directory: ``/home/[REDACTED:path]``), and no pattern here may
match a placeholder, so redacting twice is a no-op.
"""

from __future__ import annotations

import re
from typing import Final

#: The placeholder a redaction leaves, by kind.
PLACEHOLDER: Final = "[REDACTED:{kind}]"

#: Directories whose children name people or hold secrets. A path under one of
#: these keeps only its top directory ("/home/alice/x" -> "/home/[REDACTED:path]").
#: A home-relative path is one of them too: "~/x" -> "~/[REDACTED:path]",
#: "~alice/x" -> "~[REDACTED:path]" (the user name goes, as under /home).
SENSITIVE_ROOTS: Final = ("home", "root", "Users", "run/user", "var/mail", "var/spool/mail")

#: Kernel paths that BPF and procfs errors need to be understood; free text keeps
#: them whole. Every other absolute path in free text keeps only its top directory
#: ("/etc/shadow" -> "/etc/[REDACTED:path]"). ``/proc/<pid>`` still loses its pid.
KERNEL_PATHS: Final = ("sys/kernel", "sys/fs/bpf", "lib/modules", "usr/src", "proc")
#: JSON pointers into a record ("/details/hooks") name fields, not files: validation
#: problems quote them, and they stay whole too.
RECORD_POINTERS: Final = ("details", "resource")

#: Webhook URLs whose path is the secret: the host stays, the path goes
#: ("https://hooks.slack.com/[REDACTED:secret]").
WEBHOOK_HOSTS: Final = (
    r"hooks\.slack\.com",
    r"discord(?:app)?\.com/api/webhooks",
    # No subdomain before it: "[A-Za-z0-9-]+" there would make a long word quadratic.
    r"\.webhook\.office\.com",
    r"events\.pagerduty\.com/integration",
)

#: A JSON Web Token as the schema spells it. Python's re would try it at every "eyJ" of a
#: long word and scan to the word's end each time ("eyJeyJeyJ…" is quadratic); it compiles
#: ``_JWT_PYTHON`` instead, which starts once per word and finds the same strings.
_JWT: Final = r"eyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}"
_JWT_PYTHON: Final = (
    r"(?<![A-Za-z0-9_-])(?=[A-Za-z0-9_-]*?eyJ[A-Za-z0-9_-]{5})"
    r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}"
)

_OCTET = r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
_H = r"[0-9A-Fa-f]{1,4}"

#: kind -> pattern. Keys are the redaction kinds counted in ``ai.call``'s
#: ``redactions`` and reported by the redactor.
LEAK_PATTERNS: Final[dict[str, str]] = {
    # Dotted quad not preceded by a digit or dot. A following ".443" still matches
    # on purpose: tcpdump prints "10.0.0.1.443", so over-redacting 1.2.3.4.5 is the safe side.
    "ip": (
        rf"(?:^|[^0-9.]){_OCTET}\.{_OCTET}\.{_OCTET}\.{_OCTET}(?:$|[^0-9])"
        # IPv6: full form, or a compressed form with "::" and at least one group
        # after it ("::1", "fe80::1", "2001:db8::"). "std::vector" is not an IP.
        rf"|(?:^|[^0-9A-Za-z:])(?:{_H}:){{7}}{_H}(?:$|[^0-9A-Za-z:])"
        rf"|(?:^|[^0-9A-Za-z:])(?:{_H}:){{1,6}}:(?:{_H}(?::{_H}){{0,5}})?(?:$|[^0-9A-Za-z:])"
        rf"|(?:^|[^0-9A-Za-z:])::{_H}(?::{_H}){{0,6}}(?:$|[^0-9A-Za-z:])"
    ),
    # "pid=123", "pid: 123", "PID 123", and /proc/<pid>.
    "pid": r"(?:^|[^0-9A-Za-z_])[Pp][Ii][Dd][=: ][ \t\n\r\f\v]*[0-9]+|/proc/[0-9]+",
    "path": r"/(?:home|root|Users|run/user|var/mail|var/spool/mail)/[^ \t\n\r\f\v\[\]"
    + "\"'"
    + "]"
    # A home-relative path ("~/.aws/credentials", "~alice/x") is a path under /home:
    # "~/" then anything, or "~user/". Not after a word, a number or a version ("1.0~rc1/").
    + r"|(?:^|[^A-Za-z0-9._~-])~(?:/[^ \t\n\r\f\v\[\]"
    + "\"'"
    + r"]|[A-Za-z_][A-Za-z0-9._-]*/)",
    # One local-part character is enough to find an address (and keeps the search
    # linear on long words; "x+@" would be quadratic in Python's re).
    "email": r"[A-Za-z0-9._%+-]@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}",
    "secret": (
        # Authorization: Bearer <token>
        r"[Bb][Ee][Aa][Rr][Ee][Rr][ \t\n\r\f\v]+[A-Za-z0-9._~+/-]{8,}=*"
        # OpenAI / Anthropic style keys, AWS access key ids, GitHub and Slack tokens
        r"|(?:^|[^A-Za-z0-9])sk-[A-Za-z0-9_-]{16,}"
        r"|(?:AKIA|ASIA)[0-9A-Z]{16}"
        r"|gh[pousr]_[A-Za-z0-9]{30,}"
        r"|xox[abprs]-[A-Za-z0-9-]{10,}"
        # JSON Web Tokens
        rf"|{_JWT}"
        # PEM private keys
        r"|-----BEGIN [A-Z ]*PRIVATE KEY(?: BLOCK)?-----"
        # password=..., api_key: ..., token=..., aws_secret_access_key=..., routing_key=...
        # (value not already a placeholder)
        r"|(?:[Pp][Aa][Ss][Ss][Ww][Oo][Rr][Dd]|[Pp][Aa][Ss][Ss][Ww][Dd]|[Ss][Ee][Cc][Rr][Ee][Tt]"
        r"|[Ss][Ee][Cc][Rr][Ee][Tt]_?[Aa][Cc][Cc][Ee][Ss][Ss]_?[Kk][Ee][Yy]"
        r"|[Rr][Oo][Uu][Tt][Ii][Nn][Gg]_?[Kk][Ee][Yy]"
        r"|[Aa][Pp][Ii]_?[Kk][Ee][Yy]|[Tt][Oo][Kk][Ee][Nn])[ \t\n\r\f\v]*[=:][ \t\n\r\f\v]*"
        r"[^ \t\n\r\f\v\[,;&" + "\"'" + "]"
        # webhook URLs whose path is the secret (Slack, Discord, Teams, PagerDuty)
        r"|hooks\.slack\.com/services/[A-Za-z0-9]"
        r"|discord(?:app)?\.com/api/webhooks/[0-9]"
        r"|\.webhook\.office\.com/webhookb2/[A-Za-z0-9]"
        r"|events\.pagerduty\.com/integration/[A-Za-z0-9]"
        # credentials in URLs: scheme://user:pass@host (the scheme's last letter is
        # enough to find one, and keeps the search linear)
        r"|[A-Za-z][0-9+.-]*://[^/ \t\n\r\f\v:@\[]+:[^/ \t\n\r\f\v@\[]+@"
    ),
}


#: The same table compiled, for the redactor's fast check and for tests.
def _for_python(pattern: str) -> str:
    """``pattern`` with the parts Python's re would run in quadratic time rewritten."""
    return pattern.replace(_JWT, _JWT_PYTHON)


COMPILED: Final[dict[str, re.Pattern[str]]] = {
    k: re.compile(_for_python(v)) for k, v in LEAK_PATTERNS.items()
}

#: One alternation of every kind: a single ``search`` tells whether a string
#: needs the slow, per-kind path at all.
ANY_LEAK: Final[re.Pattern[str]] = re.compile(
    "|".join(f"(?:{_for_python(p)})" for p in LEAK_PATTERNS.values())
)


def placeholder(kind: str) -> str:
    """The text a redaction of ``kind`` leaves behind."""
    return PLACEHOLDER.format(kind=kind)


def find_leak(text: str) -> str | None:
    """The first leak kind found in ``text``, or None when it is clean."""
    if ANY_LEAK.search(text) is None:
        return None
    for kind, pattern in COMPILED.items():
        if pattern.search(text) is not None:
            return kind
    return None  # pragma: no cover - ANY_LEAK and COMPILED are the same patterns
