"""kerno_otel.records.redact_rules (and redact_quick): the secret and path shapes added after
the free-text review — command-line flags, home-relative paths, a bare AWS secret, and what
a BPF load error, an LLM provider error or a config reload error can carry."""

from __future__ import annotations

import string

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kerno_otel.records import patterns as _patterns
from kerno_otel.records.redact import Redactor
from kerno_otel.records.redact_quick import _suspects
from kerno_otel.records.redact_rules import _SUBS

AWS_SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"

# (input, redacted, counts)
GAPS: list[tuple[str, str, dict[str, int]]] = [
    # 1. A secret after a flag and a space ("--password=x" was already caught).
    (
        "mysqldump --password hunter2 -u root: exit 2",
        "mysqldump --password [REDACTED:secret] -u root: exit 2",
        {"secret": 1},
    ),
    ("helper --token abc123def", "helper --token [REDACTED:secret]", {"secret": 1}),
    ("cli --api-key sk_abc123", "cli --api-key [REDACTED:secret]", {"secret": 1}),
    ("cli --api_key abc", "cli --api_key [REDACTED:secret]", {"secret": 1}),
    ("--db-password s3cr3t", "--db-password [REDACTED:secret]", {"secret": 1}),
    ("--client-secret abc --x", "--client-secret [REDACTED:secret] --x", {"secret": 1}),
    ("--GITHUB-TOKEN abc", "--GITHUB-TOKEN [REDACTED:secret]", {"secret": 1}),
    ("--passphrase\tabc", "--passphrase\t[REDACTED:secret]", {"secret": 1}),
    ("--password 'hunter 2' x", "--password '[REDACTED:secret]' x", {"secret": 1}),
    ('--password "a b"', '--password "[REDACTED:secret]"', {"secret": 1}),
    (
        "openssl pkcs12 -passin pass:hunter2",
        "openssl pkcs12 -passin [REDACTED:secret]",
        {"secret": 1},
    ),
    ("keytool -storepass changeit", "keytool -storepass [REDACTED:secret]", {"secret": 1}),
    # "-p" in a login command line only.
    (
        "docker login -u bob -p hunter2 registry.example",
        "docker login -u bob -p [REDACTED:secret] registry.example",
        {"secret": 1},
    ),
    ("login -p hunter2 -u bob", "login -p [REDACTED:secret] -u bob", {"secret": 1}),
    ("mysql -u root -phunter2", "mysql -u root -p[REDACTED:secret]", {"secret": 1}),
    ("mysql -h db -phunter2", "mysql -h db -p[REDACTED:secret]", {"secret": 1}),
    ("sshpass -p hunter2 ssh h", "sshpass -p [REDACTED:secret] ssh h", {"secret": 1}),
    ("curl -u admin:hunter2 https://x", "curl -u [REDACTED:secret] https://x", {"secret": 1}),
    (
        "curl -s --user admin:hunter2 https://x",
        "curl -s --user [REDACTED:secret] https://x",
        {"secret": 1},
    ),
    # The same in an argv list's repr (subprocess.CalledProcessError) or JSON.
    (
        "Command '['mysql', '--password', 'hunter2', '-e', 'x']' returned non-zero exit status 1.",
        "Command '['mysql', '--password', '[REDACTED:secret]', '-e', 'x']' returned non-zero "
        "exit status 1.",
        {"secret": 1},
    ),
    (
        "['docker', 'login', '-u', 'bob', '-p', 'hunter2', 'reg']",
        "['docker', 'login', '-u', 'bob', '-p', '[REDACTED:secret]', 'reg']",
        {"secret": 1},
    ),
    (
        "['login', '-p', 'hunter2', '-u', 'bob']",
        "['login', '-p', '[REDACTED:secret]', '-u', 'bob']",
        {"secret": 1},
    ),
    (
        "['sshpass', '-p', 'hunter2', 'ssh']",
        "['sshpass', '-p', '[REDACTED:secret]', 'ssh']",
        {"secret": 1},
    ),
    (
        '["curl", "-s", "-u", "bob:pw", "https://x"]',
        '["curl", "-s", "-u", "[REDACTED:secret]", "https://x"]',
        {"secret": 1},
    ),
    (
        '{"argv": ["--api-key", "abc123"]}',
        '{"argv": ["--api-key", "[REDACTED:secret]"]}',
        {"secret": 1},
    ),
    # 2. Home-relative paths, cut like a path under /home.
    ("cat ~/.aws/credentials", "cat ~/[REDACTED:path]", {"path": 1}),
    ("~alice/payroll.csv", "~[REDACTED:path]", {"path": 1}),
    ("see ~root/.ssh/id_rsa: denied", "see ~[REDACTED:path] denied", {"path": 1}),
    ("'~/my file'", "'~/[REDACTED:path] file'", {"path": 1}),
    ("~bob/", "~[REDACTED:path]", {"path": 1}),
    ("http://intranet/~bob/cv.pdf", "http://intranet/~[REDACTED:path]", {"path": 1}),
    ("path=~/.config/kerno.yaml", "path=~/[REDACTED:path]", {"path": 1}),
    # 3. A bare AWS secret access key.
    (f"aws said {AWS_SECRET}", "aws said [REDACTED:secret]", {"secret": 1}),
    (AWS_SECRET, "[REDACTED:secret]", {"secret": 1}),
    (f"export X={AWS_SECRET}.", "export X=[REDACTED:secret].", {"secret": 1}),
    ("k " + "Xy1" * 13 + "z", "k [REDACTED:secret]", {"secret": 1}),  # no "/" or "+"
    # The quick test lowercases: a Kelvin sign becomes "k", which used to hide the path.
    ("\u212a/etc/shadow", "\u212a/etc/[REDACTED:path]", {"path": 1}),
    # Signed URLs (a capability until they expire).
    (
        "GET https://acct.blob.core.windows.net/c/b?sv=2022-11-02&sr=b&sig=abc%2Bdef%3D&se=x: 403",
        "GET https://acct.blob.core.windows.net/c/b?sv=2022-11-02&sr=b&sig=[REDACTED:secret]&se=x:"
        " 403",
        {"secret": 1},
    ),
    (
        "s3 https://b.s3.amazonaws.com/k?X-Amz-Expires=900&X-Amz-Signature=fe5f80f77d5fa3beca",
        "s3 https://b.s3.amazonaws.com/k?X-Amz-Expires=900&X-Amz-Signature=[REDACTED:secret]",
        {"secret": 1},
    ),
    (
        "gcs https://storage.googleapis.com/b/o?X-Goog-Signature=0a1b2c 'x'",
        "gcs https://storage.googleapis.com/b/o?X-Goog-Signature=[REDACTED:secret] 'x'",
        {"secret": 1},
    ),
    # More shapes: a pasted curl's headers, a URL password holding "@", a PGP key.
    (
        "curl -H 'Authorization: Token abcdef1234567' https://api",
        "curl -H 'Authorization: Token [REDACTED:secret]' https://api",
        {"secret": 1},
    ),
    (
        "Authorization: ApiKey abc12345xyz",
        "Authorization: ApiKey [REDACTED:secret]",
        {"secret": 1},
    ),
    (
        "Proxy-Authorization: NTLM TlRMTVNTUAABAAAAB4IIog==",
        "Proxy-Authorization: NTLM [REDACTED:secret]",
        {"secret": 1},
    ),
    (
        "authorization:negotiate YIIGhgYGKwYBBQUCoIIGejCCBnag",
        "authorization:negotiate [REDACTED:secret]",
        {"secret": 1},
    ),
    (
        "curl -H 'Cookie: session=abcdef123456; theme=dark' https://x",
        "curl -H 'Cookie: [REDACTED:secret]' https://x",
        {"secret": 1},
    ),
    ("Set-Cookie: sid=abc123; Path=/", "Set-Cookie: [REDACTED:secret]", {"secret": 1}),
    (
        "reload: dsn postgresql://kerno:p@ss@db/audit refused",
        "reload: dsn postgresql://[REDACTED:secret]@db/audit refused",
        {"secret": 1},
    ),
    (
        "-----BEGIN PGP PRIVATE KEY BLOCK-----\nlQdGBF\n-----END PGP PRIVATE KEY BLOCK----- x",
        "[REDACTED:secret] x",
        {"secret": 1},
    ),
]

# Shapes that were caught before this change and must stay caught (a BPF load error, an
# LLM provider error, a config reload error).
ALREADY: list[tuple[str, str, dict[str, int]]] = [
    (
        "curl -H 'Authorization: Bearer abcdefgh12345' https://api",
        "curl -H 'Authorization: Bearer [REDACTED:secret]' https://api",
        {"secret": 1},
    ),
    (
        "postgres://kerno:hunter2@db.internal:5432/audit",
        "postgres://[REDACTED:secret]@db.internal:5432/audit",
        {"secret": 1},
    ),
    (
        "401: invalid token eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.abcdefghij",
        "401: invalid token [REDACTED:secret]",
        {"secret": 1},
    ),
    (
        "-----BEGIN EC PRIVATE KEY-----\nMHcCAQ\n-----END EC PRIVATE KEY-----",
        "[REDACTED:secret]",
        {"secret": 1},
    ),
    (
        '{"error": {"x-api-key": "abc123"}}',
        '{"error": {"x-api-key": "[REDACTED:secret]"}}',
        {"secret": 1},
    ),
    (
        f'{{"AccessKeyId": "ASIAY34FZKBOKMUTVV7A", "SecretAccessKey": "{AWS_SECRET}"}}',
        '{"AccessKeyId": "[REDACTED:secret]", "SecretAccessKey": "[REDACTED:secret]"}',
        {"secret": 2},
    ),
    ("--password=hunter2", "--password=[REDACTED:secret]", {"secret": 1}),
]

# Text that must come out as it went in.
KEPT = [
    "--password-file /etc/kerno/pw",  # a path: the path rule cuts it, not the flag rule
    "--token-limit 5",
    "--max-tokens 5",
    "--no-password x",
    "--password",
    "--password --verbose",
    "--password [REDACTED:secret]",
    "ssh -p 22 host",
    "server -p 8080",
    "mkdir -p build/out",
    "pytest -p no:cacheprovider",
    "mysql -p hunter2",  # mysql: "-p" alone prompts; "hunter2" is the database name
    "docker run -u 1000:1000 -p 8080:80 img",
    "docker run --user 1000:1000 x",
    "['docker', 'run', '-u', '1000', '-p', '8080:80', 'img']",
    "['ssh', '-p', '22', 'h']",
    "['mkdir', '-p', 'a/b']",
    "login -u bob -p 5432",  # an all-digit "-p" value is taken for a port
    "~",
    "~/",
    "~3/4 of the calls",
    "linux-6.1~rc3/Makefile",
    "a~b/c",
    "~/[REDACTED:path]",
    "~[REDACTED:path]",
    "commit 0123456789abcdef0123456789abcdef01234567",
    "0123456789ABCDEF0123456789ABCDEF01234567",
    "0123456789abcdefABCDEF0123456789abcdef01",  # mixed-case hex: still only hex
    "a" * 40,
    "A1" * 20,  # no lowercase letter
    "kernel/bpf/verifier/and/more/lower/words",  # no digit, no upper case
    "req_" + "Xy1" * 13 + "z",  # part of an identifier
    "x." + "Xy1" * 13 + "z",  # part of a dotted name
    "Xy1" * 13 + "zz",  # 41 characters
    "Xy1" * 13 + "z=",  # part of padded base64
    "sig " + "Ab1+" * 21 + "Ab==",  # an Ed25519 signature (88 characters)
    "session cookie: missing",
    "signal sig=SIGKILL",  # not a query parameter
    "https://x/?design=a&sign=b",
    "cookie: none",
    "authorization: token validation failed",
    "Authorization: Token [REDACTED:secret]",
]


@pytest.mark.parametrize(("text", "expected", "counts"), GAPS + ALREADY)
def test_shapes_are_redacted(text: str, expected: str, counts: dict[str, int]) -> None:
    redactor = Redactor()
    assert (expected, counts) == redactor.redact_text(text)
    assert _patterns.find_leak(expected) is None
    assert (expected, {}) == redactor.redact_text(expected)  # redacting twice is a no-op


@pytest.mark.parametrize("text", KEPT)
def test_ordinary_text_is_kept(text: str) -> None:
    if text.startswith("--password-file"):
        expected = ("--password-file /etc/[REDACTED:path]", {"path": 1})
        assert expected == Redactor().redact_text(text)
        return
    assert (text, {}) == Redactor().redact_text(text)


@pytest.mark.parametrize(
    ("text", "kind"),
    [
        ("~/.aws/credentials", "path"),
        ("cat ~alice/x", "path"),
        ("~bob/", "path"),
        ("-----BEGIN PGP PRIVATE KEY BLOCK-----", "secret"),
    ],
)
def test_schema_forbids_home_relative_paths_and_pgp_keys(text: str, kind: str) -> None:
    # The published safe_text patterns: a redaction bug here is a validation failure.
    assert kind == _patterns.find_leak(text)


@pytest.mark.parametrize("text", ["~", "~/", "~3/4", "1.0~rc1/x", "x~/y", "~[REDACTED:path]"])
def test_schema_allows_tildes_that_are_not_home_paths(text: str) -> None:
    assert _patterns.find_leak(text) is None


# --- property: a planted secret never survives ---------------------------------------------------

# No digits in the glue and at least one digit in the secret, so a secret found in the
# output can only be the secret itself (not glue, not a placeholder).
GLUE = st.text(alphabet=string.ascii_letters + " .,:;()\n\t", max_size=12)
# What tokens and passwords are made of (URL-safe; a "/" in a URL password would be
# percent-encoded). An all-digit "-p" value is taken for a port, so a letter too.
SECRET_CHARS = string.ascii_letters + string.digits + "._+"
SECRETS = st.text(alphabet=SECRET_CHARS, min_size=8, max_size=24).filter(
    lambda s: any(c.isdigit() for c in s) and any(c.isalpha() for c in s)
)
SHAPES = [
    "--password {s}",
    "--api-key {s}",
    "--auth-token '{s}'",
    "-u bob -p {s}",
    "sshpass -p {s} ssh",
    "curl -u bob:{s} https://x",
    "Cookie: sid={s}",
    "Authorization: Token {s}",
    "Authorization: Basic {s}",
    "Bearer {s}",
    "postgres://u:{s}@db/x",
    "password: {s}",
    "['mysql', '--password', '{s}']",
    "['sshpass', '-p', '{s}', 'ssh']",
    '["login", "-u", "bob", "-p", "{s}"]',
    "['login', '-p', '{s}', '-u', 'bob']",
    "['curl', '-u', 'bob:{s}', 'https://x']",
]


def _aws_secret(draw_chars: str) -> str:
    # 40 base64 characters with the mix a real one almost always has.
    return ("aZ9/" + draw_chars)[:40].ljust(40, "Q")


@settings(max_examples=400, deadline=None, derandomize=True)
@given(GLUE, st.sampled_from(SHAPES), SECRETS, GLUE)
def test_planted_secret_never_survives(before: str, shape: str, secret: str, after: str) -> None:
    # Each piece is separated from the next, as in a real line.
    text = f"{before} {shape.format(s=secret)} {after}"
    out, counts = Redactor().redact_text(text)
    assert secret not in out, (text, out)
    assert counts.get("secret", 0) >= 1
    assert _patterns.find_leak(out) is None


@settings(max_examples=200, deadline=None, derandomize=True)
@given(GLUE, st.text(alphabet=string.ascii_letters + string.digits + "/+", max_size=40), GLUE)
def test_planted_bare_aws_secret_never_survives(before: str, chars: str, after: str) -> None:
    secret = _aws_secret(chars)
    out, _ = Redactor().redact_text(f"{before} {secret} {after}")
    assert secret not in out


@settings(max_examples=200, deadline=None, derandomize=True)
@given(
    GLUE,
    st.sampled_from(["~/", "~alice/", "~_svc7/"]),
    st.text(alphabet=string.ascii_letters + string.digits + "._-/", min_size=1, max_size=20).filter(
        lambda s: any(c.isdigit() for c in s)
    ),
)
def test_planted_home_path_never_survives(before: str, home: str, rest: str) -> None:
    out, _ = Redactor().redact_text(f"{before} {home}{rest} done")
    assert rest not in out
    assert out.count("alice") <= before.count("alice") and "_svc7" not in out
    assert _patterns.find_leak(out) is None


@settings(max_examples=300, deadline=None, derandomize=True)
@given(
    st.lists(
        st.sampled_from(
            [t for t, _, _ in GAPS] + KEPT + [" ", "\u0130", "\u212a", "-", "~", "'", ", "]
        )
    )
)
def test_quick_test_never_misses_a_substitution(pieces: list[str]) -> None:
    # The quick test must hold wherever a substitution would change something.
    text = "".join(pieces)
    for sub in _SUBS:
        if sub.regex.search(text):
            assert _suspects(text.lower()) & sub.bit, (text, sub.kind)
    out, counts = Redactor().redact_text(text)
    assert (out, {}) == Redactor().redact_text(out)
    assert (out == text) == (not counts)


def test_long_lines_of_flags_are_left_alone() -> None:
    # Many "-u x" words with no "-p", many "curl" with no "-u": nothing to take (the
    # word counts are bounded, so this stays linear; a runaway would hit the timeout).
    text = "-u x " * 20000 + "curl " * 2000 + "--token-limit 5 " * 2000
    assert (text, {}) == Redactor().redact_text(text)


# --- linear time on hostile words ---------------------------------------------------------------


@pytest.mark.timeout(5)
@pytest.mark.parametrize(
    "unit",
    [
        *("'-u", "'-u'x", "/-pX", ",-p", "-u\x00", "(-u", "'-p'x", ',"-u', ',"-p', ',"-u","b'),
        *("eyJ", "_eyJ", "cookie:", ".cookie:"),
    ],
)
def test_a_long_word_of_flags_is_linear(unit: str) -> None:
    # 200 kB of one whitespace-free word packed with "-u"/"-p": every one used to scan
    # to the word's end when its match failed (seconds per 20 kB, minutes per 100 kB).
    # "eyJeyJ…" and "cookie:cookie:…" did the same to the JWT and cookie shapes (a "."
    # or an "=" further on makes the quick test let them through).
    text = unit * (200_000 // len(unit)) + " x.y a=b"
    out, counts = Redactor().redact_text(text)
    assert "secret" not in counts  # no flag here takes a value ("/-pX/..." is a path)
    assert (out, {}) == Redactor().redact_text(out)


# --- headers as a dict, an env var or a quoted value (review of the redaction merge) -------------

# A provider SDK or an OTLP exporter prints its request headers as a dict; the OTLP exporter's
# environment variable spells them "Authorization=Basic%20..."; a config error quotes a value.
REVIEWED: list[tuple[str, str, dict[str, int]]] = [
    (
        "headers={'Authorization': 'Basic dXNlcjpwYXNzd29yZA=='}",
        "headers={'Authorization': '[REDACTED:secret]'}",
        {"secret": 1},
    ),
    (
        '{"authorization": "Api-Token dt0c01.ABCDEF1234567890.abcdefghijklmnop"}',
        '{"authorization": "[REDACTED:secret]"}',
        {"secret": 1},
    ),
    (
        "{'Authorization': 'Bearer abcdefgh12345'}",
        "{'Authorization': '[REDACTED:secret]'}",
        {"secret": 1},
    ),
    (
        "OTEL_EXPORTER_OTLP_HEADERS=Authorization=Basic%20dXNlcjpwYXNz,x=1",
        "OTEL_EXPORTER_OTLP_HEADERS=Authorization=Basic%20[REDACTED:secret],x=1",
        {"secret": 1},
    ),
    (
        "config: invalid value for password: 'correct horse battery staple'",
        "config: invalid value for password: '[REDACTED:secret]'",
        {"secret": 1},
    ),
    (
        '{"api_key": "two words", "model": "claude-3-5-sonnet-20241022"}',
        '{"api_key": "[REDACTED:secret]", "model": "claude-3-5-sonnet-20241022"}',
        {"secret": 1},
    ),
    ("Passphrase: hunter2", "Passphrase: [REDACTED:secret]", {"secret": 1}),
    (
        "{'Proxy-Authorization': 'Basic dXNlcjpwYXNz'}",
        "{'Proxy-Authorization': '[REDACTED:secret]'}",
        {"secret": 1},
    ),
    # An argv list as compact JSON prints it (no space after the commas).
    (
        '["docker","login","-u","bob","-p","hunter2x","reg"]',
        '["docker","login","-u","bob","-p","[REDACTED:secret]","reg"]',
        {"secret": 1},
    ),
    (
        '["login","-p","hunter2x","-u","bob"]',
        '["login","-p","[REDACTED:secret]","-u","bob"]',
        {"secret": 1},
    ),
    (
        '"Authorization": Basic dXNlcjpwYXNz',
        '"Authorization": Basic [REDACTED:secret]',
        {"secret": 1},
    ),
    # A path that runs into a placeholder ends at it: the path rule stops at ":" and cut
    # "[REDACTED:secret]" in two ("/v1/[REDACTED:path]:secret]").
    (
        "Max retries exceeded with url: /v1/chat/completions?api-version=2&api-key=abc123",
        "Max retries exceeded with url: /v1/[REDACTED:path][REDACTED:secret]",
        {"secret": 1, "path": 1},
    ),
    # Azure connection strings, an env var list of a failed subprocess, an AWS SigV4 header.
    (
        "DefaultEndpointsProtocol=https;AccountName=kerno;AccountKey=abcdEFGH1234+/==;"
        "EndpointSuffix=core.windows.net",
        "DefaultEndpointsProtocol=https;AccountName=kerno;AccountKey=[REDACTED:secret];"
        "EndpointSuffix=core.windows.net",
        {"secret": 1},
    ),
    (
        "Endpoint=sb://ns.servicebus.windows.net/;SharedAccessKeyName=send;"
        "SharedAccessKey=abcDEF123=",
        "Endpoint=sb://ns.servicebus.windows.net/;SharedAccessKeyName=send;"
        "SharedAccessKey=[REDACTED:secret]",
        {"secret": 1},
    ),
    (
        "Command '['env', 'DB_PASS=hunter2', 'SMTP-PASS=s3cr3t', 'prog']' returned 1",
        "Command '['env', 'DB_PASS=[REDACTED:secret]', 'SMTP-PASS=[REDACTED:secret]', 'prog']'"
        " returned 1",
        {"secret": 2},
    ),
    (
        "Authorization: AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/"
        "aws4_request, SignedHeaders=host;x-amz-date, Signature=fe5f80f77d5fa3beca038a248ff0",
        "Authorization: AWS4-HMAC-SHA256 Credential=[REDACTED:secret], "
        "SignedHeaders=host;x-amz-date, Signature=[REDACTED:secret]",
        {"secret": 2},
    ),
    (
        "HTTP 401: hf_AbCdEfGhIjKlMnOpQrStUvWxYz01234567 is invalid",
        "HTTP 401: [REDACTED:secret] is invalid",
        {"secret": 1},
    ),
]

REVIEWED_KEPT = [
    "authorization: denied for this role",
    "'authorization': '[REDACTED:secret]'",
    "{'authorization': ''}",
    "password: ''",
    "model claude-3-5-sonnet-20241022 returned 529",
    "attach raw_syscalls:sys_enter failed: -EINVAL",
    "digest sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
    "cycle 6f1c0b1e-3a0d-4c7e-9d8e-2b8c1b7f4a11 at 2026-11-27T18:00:00.123456789Z",
    "the passphrase policy requires 12 characters",
    "bypass=true compass: north",
    "signals: a, sig=SIGKILL",
    '["docker","run","-u","1000","-p","8080:80","img"]',
    '["ssh","-p","22","h"]',
    '["mkdir","-p","a/b"]',
]


@pytest.mark.parametrize(("text", "expected", "counts"), REVIEWED)
def test_reviewed_shapes_are_redacted(text: str, expected: str, counts: dict[str, int]) -> None:
    redactor = Redactor()
    assert (expected, counts) == redactor.redact_text(text)
    assert (expected, {}) == redactor.redact_text(expected)
    assert _suspects(text.lower()) != 0


@pytest.mark.parametrize("text", REVIEWED_KEPT)
def test_reviewed_ordinary_text_is_kept(text: str) -> None:
    assert (text, {}) == Redactor().redact_text(text)


@pytest.mark.timeout(5)
def test_leak_check_is_linear_on_a_long_word() -> None:
    # find_leak (the validator's hint, type names) runs the schema's patterns in Python's re.
    assert _patterns.find_leak("eyJ" * 66_000 + ".ab.ab") is None
    assert _patterns.find_leak("x-eyJ" + "a" * 9 + ".abcdef.abcdef") == "secret"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("t=x-eyJhbGciOi.eyJzdWIi.abcdefgh ok", "t=[REDACTED:secret] ok"),
        ("id_token%3DeyJhbGciOi.eyJzdWIi.abcdefgh", "id_token%[REDACTED:secret]"),
        ("eyJ eyJhbGciOi.eyJzdWIi.abcdefgh", "eyJ [REDACTED:secret]"),
        ("Cookie: sid=abc123; theme=dark", "Cookie: [REDACTED:secret]"),
    ],
)
def test_jwt_and_cookie_shapes_still_go(text: str, expected: str) -> None:
    out, _ = Redactor().redact_text(text)
    assert out == expected
    assert _patterns.find_leak(out) is None
