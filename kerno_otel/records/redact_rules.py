"""The default redaction table: one substitution per leak shape, in application order.

``_SUBS`` holds, in application order, a regex per default kind (Python's re only) that
removes at least what the portable leak patterns in ``patterns.py`` find; ``redact_quick``
says cheaply which of them may match a string, so clean text skips them all. The
redactor (``redact.py``) applies them, after the quick test in ``redact_quick.py``.
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
    r"(?:[Pp][Aa][Ss][Ss][Ww](?:[Oo][Rr])?[Dd]|[Pp][Ww][Dd]|[Pp][Aa][Ss][Ss][Pp][Hh][Rr][Aa][Ss][Ee]"
    r"|[Ss][Ee][Cc][Rr][Ee][Tt](?:_?[Aa][Cc][Cc][Ee][Ss][Ss])?(?:[_-]?[Kk][Ee][Yy])?"
    r"|[Rr][Oo][Uu][Tt][Ii][Nn][Gg]_?[Kk][Ee][Yy]"
    r"|[Pp][Rr][Ii][Vv][Aa][Tt][Ee][_-]?[Kk][Ee][Yy]"
    r"|[Cc][Rr][Ee][Dd][Ee][Nn][Tt][Ii][Aa][Ll][Ss]?"
    r"|[Aa][Pp][Ii][_-]?[Kk][Ee][Yy]|[Tt][Oo][Kk][Ee][Nn]"
    # Azure connection strings; "DB_PASS=", "SMTP-PASS:" (not "bypass=", "compass:").
    r"|(?i:accountkey|sharedaccesskey)|[_-][Pp][Aa][Ss][Ss])"
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
# Authorization schemes whose credentials are a secret (besides Bearer, which is one
# anywhere): "Basic" and "Token" are English words, so only after "Authorization:".
_AUTH_SCHEMES: Final = r"(?i:basic|negotiate|ntlm)"
# Schemes that are also words ("token validation failed"): their credentials must hold
# a digit.
_AUTH_WORDS: Final = r"(?i:token|apikey)"
_AUTHORIZATION: Final = r"[Aa][Uu][Tt][Hh][Oo][Rr][Ii][Zz][Aa][Tt][Ii][Oo][Nn]"
# Command-line flags whose next argument is a secret ("--password hunter2",
# "--db-password x", "-storepass x"). Only the flag itself: "--password-file /p",
# "--token-limit 5" and "--no-password x" take no secret. "--private-key" is left
# out: it names a key file (and "private-key=..." is a secret form anyway).
_FLAG_KEYS: Final = (
    r"(?i:passw(?:or)?d|passphrase|pwd|secret|token|api[-_]?key|access[-_]?key"
    r"|secret[-_]?key|credentials?|pass|storepass|keypass|passin|passout)"
)
_Q: Final = "[\"']"
# Between a flag and its value: whitespace, or the "', '" of an argv list's repr
# (subprocess.CalledProcessError: "Command '['mysql', '--password', 'x']' returned ...").
_SEP: Final = rf"(?:{_Q},{_WS}*|{_WS}+)"
_FLAG_LONG: Final = rf"(?<![\w-])--?(?![Nn][Oo]-)(?:[A-Za-z0-9]+[-_])*{_FLAG_KEYS}{_SEP}"


def _flag_value(quote: str) -> str:
    """A flag's value: a quoted string (the opening quote is kept, the closing one stays
    after the match) or a word that is not another flag, a placeholder or a "=" form."""
    return (
        rf"(?:(?P<{quote}>[\"'])[^\"'\n\[][^\"'\n]*(?=(?P={quote}))"
        rf"|[^{_NWS}\[\"'=-][^{_NWS}\"']*)"
    )


# "-p VALUE" is a password only in a login command line ("-u bob -p x", "-p x -u bob",
# "sshpass -p x", "mysql ... -px"); elsewhere it is a port ("ssh -p 22"), "parents"
# ("mkdir -p a/b") or a plugin ("pytest -p no:x"), and stays. "curl -u user:pass" (and
# "--user") is a secret too; "docker run -u 1000:1000" is not, so only after "curl".
# A flag may open an argv item ("'-p'"); "-p" and "-u" may hold their value ("-pX").
# Atomic: once "', " is read as the separator it is not read again as a quoted value.
_P_SEP: Final = rf"(?>{_Q},{_WS}*|{_WS}*)"
# "-u" and "-p" start an argument: only after whitespace, a quote or at the start. A
# match that fails after them (no whitespace after the user name or the value) then
# scans at most to the next whitespace or quote, which no later start lies before: the
# search stays linear. After any other character ("/-pX/-pX...", "'-u'-u...", one long
# word of them) every "-p" would scan to the word's end, and 100 kB took seconds.
_ARG_START: Final = r"(?<![^\s\ufeff\"'])"
# Compact JSON ('["-u","bob"]') has no space after its commas: a quoted flag may follow one.
_FLAG_START: Final = rf"(?:{_ARG_START}{_Q}?|(?<=,){_Q})"
_USER_FLAG: Final = rf"{_FLAG_START}(?:-u{_P_SEP}|--user(?:name)?(?:{_SEP}|=))"
_SHORT_P: Final = rf"{_FLAG_START}-p"
_WORDS: Final = rf"(?:[^{_NWS}]+{_WS}+){{0,3}}?"
# After a user name or a "-p" value: whitespace and at most three words, or the comma a
# compact list ends it with and nothing (a word there would run to the end of a long one).
_AFTER: Final = rf"(?:{_WS}+{_WORDS}|(?<=,))"
# A user name, quoted or not ("bob", "'bob',"): it holds no quote, so it ends at the next.
_USER_VALUE: Final = rf"{_Q}?[^{_NWS}\[\"'-][^{_NWS}\"']*{_Q}?,?"
# A "-p" value that is a port ("-p 8080", "-p 8080:80/tcp") stays even in a login line
# ("docker run -u 1000 -p 8080:80"): an all-digit password after "-p" is not caught.
_NOT_PORT: Final = rf"(?!{_Q}?[0-9][0-9.:]*(?:/[a-z]+)?(?:[{_NWS}\"',]|$))"
_P_AFTER: Final = "|".join(
    (
        rf"{_USER_FLAG}{_USER_VALUE}{_AFTER}{_SHORT_P}{_P_SEP}",
        rf"(?<![\w-])sshpass{_SEP}{_SHORT_P}{_P_SEP}",
        rf"(?<![\w-])(?:mysql|mysqldump|mysqladmin|mariadb)(?![\w-])[^\n]{{0,200}}?{_SHORT_P}",
    )
)
_FLAG_RE: Final = (
    rf"((?:{_FLAG_LONG}|(?<![\w-])curl{_SEP}[^\n]{{0,500}}?{_USER_FLAG})){_flag_value('q1')}"
    rf"|((?:{_P_AFTER})){_NOT_PORT}{_flag_value('q2')}"
    rf"|({_SHORT_P}{_P_SEP}){_NOT_PORT}{_flag_value('q3')}"
    rf"(?={_Q}?,?{_AFTER}{_USER_FLAG}{_USER_VALUE})"
)


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
    _SIG,
    _FLAG,
    _COOKIE,
    _BEARER_BIT,
    _AWS_SECRET,
    _AWS_BARE,
    _TOKENS,
    _TILDE,
    _PATH,
    _ANY_PATH,
    _EMAIL,
    _IP6,
    _IP4,
    _PID,
) = (1 << i for i in range(18))

#: In application order: a PEM block or a URL's credentials go whole before the
#: narrower kinds can nibble at them; IPv6 (which may end in a dotted quad) before IPv4;
#: IPs before pids ("pid 10.0.0.1" is an address).
_SUBS: Final[tuple[_Sub, ...]] = (
    _Sub(
        _PEM,
        "secret",
        # The whole block; a block cut short loses everything after its header.
        # "PGP PRIVATE KEY BLOCK" too (gpg --export-secret-keys --armor).
        re.compile(
            r"-----BEGIN [A-Z ]*PRIVATE KEY(?: BLOCK)?-----(?s:.*?)"
            r"(?:-----END [A-Z ]*PRIVATE KEY(?: BLOCK)?-----|\Z)"
        ),
        _PH_SECRET,
    ),
    _Sub(
        _URL,
        "secret",
        # Keeps scheme and "@host"; starts at "://" so a long word without one is cheap.
        # An empty user name too ("redis://:pw@cache"), which the leak pattern misses,
        # and a password holding "@" ("postgres://u:p@ss@db"): up to the last "@" of
        # the authority, so a host that follows one goes too (the safe side).
        re.compile(rf"(?<=[A-Za-z0-9+.-])(://)[^/{_NWS}:@\[]*:[^/{_NWS}@\[][^/{_NWS}\[]*@"),
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
        # "Bearer " inside the value goes with it. A quoted value goes up to its closing
        # quote, spaces and all ("password: 'correct horse battery staple'"); the scan
        # ends at the next quote of its kind, so it stays linear.
        re.compile(
            rf"({_KEY}[\"']?{_WS}*[=:]{_WS}*')(?:{_BEARER}{_WS}+)?[^'\n\[][^'\n]*(?=')"
            rf"|({_KEY}[\"']?{_WS}*[=:]{_WS}*\")(?:{_BEARER}{_WS}+)?[^\"\n\[][^\"\n]*(?=\")"
            rf"|({_KEY}[\"']?{_WS}*[=:]{_WS}*[\"']?)(?:{_BEARER}{_WS}+)?"
            rf"[^{_NWS}\[,;&\"'][^{_NWS},;&\"']*"
        ),
        _keep(_PH_SECRET),
    ),
    _Sub(
        _SIG,
        "secret",
        # A signed URL is a capability until it expires: an Azure SAS "sig=", an S3 or
        # GCS presigned "X-Amz-Signature=" / "X-Goog-Signature=" goes (their
        # "Credential=" and "Security-Token=" are the key-value forms' already), and so
        # does the ", Signature=" of an AWS SigV4 Authorization header.
        re.compile(
            r"((?:[?&](?:[Ss][Ii][Gg]|(?:[Xx]-(?:[Aa][Mm][Zz]|[Gg][Oo][Oo][Gg])-)?"
            r"[Ss][Ii][Gg][Nn][Aa][Tt][Uu][Rr][Ee])"
            rf"|,{_WS}*[Ss][Ii][Gg][Nn][Aa][Tt][Uu][Rr][Ee])=)"
            rf"[^{_NWS}&#\[\"'][^{_NWS}&#\"']*"
        ),
        _keep(_PH_SECRET),
    ),
    _Sub(
        _FLAG,
        "secret",
        # The flag (and an opening quote) stays: "--password [REDACTED:secret]".
        re.compile(_FLAG_RE),
        _keep(_PH_SECRET),
    ),
    _Sub(
        _COOKIE,
        "secret",
        # A pasted request's cookies: the whole header value, to the end of the line or
        # a quote. Only when it holds "name=" ("session cookie: missing" is prose). A
        # cookie name holds no ":", so a failed match stops at the next "cookie:".
        re.compile(
            rf"((?<![A-Za-z0-9_-])(?:[Ss][Ee][Tt]-)?[Cc][Oo][Oo][Kk][Ii][Ee]:{_WS}*)"
            rf"[^{_NWS}\[\"';=:]+=[^\n\r\"']*"
        ),
        _keep(_PH_SECRET),
    ),
    _Sub(
        _BEARER_BIT,
        "secret",
        # The other schemes only after "Authorization:" (or "=", as the OTLP exporter's
        # headers variable spells it, with "%20" for the space): alone they are English
        # words. The quoted value of an "Authorization" key (a dict of request headers)
        # goes whole, whatever its scheme ("Api-Token …", "SSWS …"), and so does a
        # "Proxy-Authorization" one.
        re.compile(
            rf"([\"'](?:[A-Za-z]+-)?{_AUTHORIZATION}[\"']{_WS}*[:=]{_WS}*[\"'])"
            r"[^\"'\n\[][^\"'\n]*"
            rf"|((?:{_BEARER}|{_AUTHORIZATION}[\"']?[:=]{_WS}*{_AUTH_SCHEMES})(?:{_WS}|%20)+)"
            r"[A-Za-z0-9._~+/-]{8,}=*"
            rf"|({_AUTHORIZATION}[\"']?[:=]{_WS}*{_AUTH_WORDS}(?:{_WS}|%20)+)"
            r"(?=[A-Za-z._~+/-]*[0-9])[A-Za-z0-9._~+/-]{8,}=*"
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
        _AWS_BARE,
        "secret",
        # A bare AWS secret access key: exactly 40 characters of base64 standing alone,
        # with an upper- and a lowercase letter, a digit, and a character that is not
        # hex (so a git SHA, upper or lower case, stays). Not inside a word, a dotted
        # name, an identifier or a longer base64 run; not a kernel path.
        re.compile(
            rf"(?<![A-Za-z0-9/+_.-])(?!/(?:{_KERNEL})/)"
            r"(?=[A-Za-z0-9/+]{0,39}[A-Z])(?=[A-Za-z0-9/+]{0,39}[a-z])"
            r"(?=[A-Za-z0-9/+]{0,39}[0-9])(?=[A-Za-z0-9/+]{0,39}[G-Zg-z/+])"
            r"[A-Za-z0-9/+]{40}(?![A-Za-z0-9/+=_-])"
        ),
        _PH_SECRET,
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
            # Hugging Face access tokens.
            r"|(?<![A-Za-z0-9_])hf_[A-Za-z0-9]{30,}"
            # A JWT with the word it is glued to, if any: once per word, linear.
            rf"|{_patterns._JWT_PYTHON}"
        ),
        _PH_SECRET,
    ),
    _Sub(
        _TILDE,
        "path",
        # A home-relative path is a path under a sensitive root: "~/" stays, a user
        # name goes with the rest ("~alice/x" -> "~[REDACTED:path]", as "/home/alice/x"
        # -> "/home/[REDACTED:path]"). Not after a word, a number or a dotted version
        # ("1.0~rc1/x"); a user name starts with a letter or "_" ("~3/4" stays).
        re.compile(
            rf"((?<![A-Za-z0-9._~-])~)(?:(/)[^{_NWS}\[\]\"'][^{_NWS}\"']*"
            rf"|[A-Za-z_][A-Za-z0-9._-]*/[^{_NWS}\"']*)"
        ),
        _keep(_PH_PATH),
    ),
    _Sub(
        _ANY_PATH,
        "path",
        # Any other absolute path keeps its top directory ("/etc/[REDACTED:path]"),
        # except the kernel paths BPF errors need. It ends at a ":" as well, so that
        # "FILE:LINE: why" keeps its line number. It ends before a placeholder too
        # ("/v1/x?api-key=[REDACTED:secret]"), which a ":" would otherwise cut in two.
        re.compile(
            rf"({_PATH_START}(?!(?:{_KERNEL}|{_DEEP_ROOTS})/)[A-Za-z0-9._-]+/)"
            rf"[^{_NWS}\[\]\"':](?:[^{_NWS}\"':\[]|\[(?!REDACTED:))*"
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
