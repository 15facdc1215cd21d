"""Verdicts and exact reasons of RecordValidator and the reference (kerno_otel/_validate.py).

Records come from test_schema.py (``record``, ``with_details``); every verdict is checked
against the reference validator too.
"""

from __future__ import annotations

import copy
import random
from collections.abc import Iterator
from pathlib import Path
from types import MappingProxyType
from typing import Any

import pytest
from test_schema import _DELETE, SIG, _plugin, record, with_details

from kerno_otel.records.catalogue import BUILTIN_TYPES, EventType
from kerno_otel.records.schema import BASE_URI, RECORD, SchemaSet, schema_file
from kerno_otel.records.validate import RecordValidator, reference_check, reference_validator

#: Each kind of leak, as a producer bug would let it through.
LEAKS = {
    "ip": ["10.1.2.3", "connect to 192.168.0.7:443 failed", "fe80::1", "2001:db8::ff00:42:8329"],
    "pid": ["pid=4242", "worker PID 17 died", "/proc/4242/status"],
    "path": ["/home/alice/.ssh/id_rsa", "/root/secret.txt", "/run/user/1000/bus"],
    "email": ["alice@example.com", "mail bob.smith+x@corp.example.org now"],
    "secret": [
        "sk-abcdefghijklmnopqrstuv",
        "Authorization: Bearer abcdefghijkl",
        "AKIAABCDEFGHIJKLMNOP",
        "password=hunter2",
        "https://user:pw@example.com/x",
        "-----BEGIN RSA PRIVATE KEY-----",
    ],
}


def string_leaves(value: Any, path: tuple[str | int, ...] = ()) -> Iterator[tuple[Any, ...]]:
    if isinstance(value, str):
        yield path
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from string_leaves(item, (*path, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from string_leaves(item, (*path, index))


def set_at(rec: dict[str, Any], path: tuple[Any, ...], value: Any) -> None:
    target: Any = rec
    for part in path[:-1]:
        target = target[part]
    target[path[-1]] = value


@pytest.fixture(scope="module")
def fast() -> RecordValidator:
    return RecordValidator(SchemaSet.builtin())


@pytest.fixture(scope="module")
def ref() -> Any:
    return reference_validator(SchemaSet.builtin())


def verdicts(fast: RecordValidator, ref: Any, rec: Any) -> tuple[str | None, bool]:
    """RecordValidator's reason, after checking the reference validator agrees on the verdict."""
    reason = fast.check(rec)
    assert (reason is None) == ref.is_valid(rec), (reason, rec)
    return reason, reason is None


# --- verdicts --------------------------------------------------------------------------------


@pytest.mark.parametrize("type_name", list(BUILTIN_TYPES))
def test_good_records_are_valid(fast: RecordValidator, ref: Any, type_name: str) -> None:
    assert verdicts(fast, ref, record(type_name)) == (None, True)


@pytest.mark.parametrize("type_name", list(BUILTIN_TYPES))
def test_seq_prev_severity_outcome_and_resource_are_optional(
    fast: RecordValidator, ref: Any, type_name: str
) -> None:
    rec = record(type_name)
    for key in ("seq", "prev", "severity", "outcome", "resource", "trace_id", "span_id"):
        del rec[key]
    assert verdicts(fast, ref, rec) == (None, True)


@pytest.mark.parametrize("type_name", list(BUILTIN_TYPES))
def test_every_required_detail_is_required(fast: RecordValidator, ref: Any, type_name: str) -> None:
    required = SchemaSet.builtin().documents()[schema_file(type_name)]["required"]
    for key in required:
        expected = f"{type_name}: /details: 'required' rule failed (missing \"{key}\")"
        assert (expected, False) == verdicts(fast, ref, with_details(type_name, **{key: _DELETE}))


@pytest.mark.parametrize("type_name", list(BUILTIN_TYPES))
def test_details_are_closed(fast: RecordValidator, ref: Any, type_name: str) -> None:
    expected = f"{type_name}: /details: 'additionalProperties' rule failed (unexpected property)"
    assert (expected, False) == verdicts(fast, ref, with_details(type_name, bogus=1))


@pytest.mark.parametrize("type_name", list(BUILTIN_TYPES))
def test_a_leak_in_any_string_field_fails(fast: RecordValidator, ref: Any, type_name: str) -> None:
    base = record(type_name)
    for path in string_leaves(base["details"]):
        for leaks in LEAKS.values():
            for leak in leaks:
                rec = copy.deepcopy(base)
                set_at(rec["details"], path, leak)
                reason, ok = verdicts(fast, ref, rec)
                assert not ok, (path, leak)
                assert reason is not None
                assert leak not in reason
                assert "alice" not in reason and "hunter2" not in reason


FRAGMENTS = [
    *("10.", "1.2.3.4", "256.1.1.1", "1.2.3.4.5", "::", "fe80", ":", "1", "a", " ", "\t", "\n"),
    *("pid", "PID", "=", ": ", "/proc/", "/home/", "/home", "[", "]", '"', "'", "@", "x.org"),
    *(".", "sk-", "x" * 16, "Bearer ", "eyJ", "-----BEGIN ", "PRIVATE KEY-----", "password"),
    *("token", "://", "u:p@", "AKIA", "ABCDEFGHIJKLMNOP", "ghp_", "xoxb-", "é", "𝟙"),
]


def _fuzz(fragments: list[str], n: int) -> Iterator[str]:
    rng = random.Random(7)
    for _ in range(n):
        yield "".join(rng.choice(fragments) for _ in range(rng.randrange(1, 7)))


def _disagreements(fast: RecordValidator, ref: Any, texts: Iterator[str]) -> list[str]:
    found = []
    for text in texts:
        rec = with_details("ai.call", error=text)
        if (fast.check(rec) is None) != ref.is_valid(rec):
            found.append(text)
    return found


def test_fast_and_reference_agree_on_leak_patterns(fast: RecordValidator, ref: Any) -> None:
    # Also checks that the hot path's single alternation means what the
    # published one-pattern-per-kind form means.
    assert _disagreements(fast, ref, _fuzz(FRAGMENTS, 600)) == []


def test_engines_agree_on_exotic_whitespace(fast: RecordValidator, ref: Any) -> None:
    exotic = ["/home/\x1c", "/home/\ufeff]", "token: \x1f", "Bearer \x1cABCDEFGHIJKLMNOP"]
    assert _disagreements(fast, ref, iter(exotic)) == []


def test_leak_reason_names_the_kind_not_the_value(fast: RecordValidator, ref: Any) -> None:
    cases = {
        "connect to 10.1.2.3 failed": "ip",
        "killed pid=4242": "pid",
        "cannot open /home/alice/x": "path",
        "mail alice@example.com": "email",
        "key sk-abcdefghijklmnopqrstuv rejected": "secret",
    }
    for text, kind in cases.items():
        rec = with_details("ai.call", error=text)
        expected = f"ai.call: /details/error: 'not' rule failed (matches leak pattern \"{kind}\")"
        assert (expected, False) == verdicts(fast, ref, rec)
        assert expected == reference_check(ref, rec)


def test_a_leak_in_resource_fails(fast: RecordValidator, ref: Any) -> None:
    rec = record("plugin.load", resource={"host.name": "alice@example.com"})
    expected = (
        "plugin.load: /resource/host.name: 'not' rule failed (matches leak pattern \"email\")"
    )
    assert (expected, False) == verdicts(fast, ref, rec)
    rec = record("plugin.load", resource={"10.0.0.1": "x"})
    expected = "plugin.load: /resource: 'propertyNames' rule failed (matches leak pattern \"ip\")"
    assert (expected, False) == verdicts(fast, ref, rec)
    assert expected == reference_check(ref, rec)


def test_remote_ip_must_be_the_placeholder(fast: RecordValidator, ref: Any) -> None:
    expected = "auth.failure: /details/remote_ip: 'const' rule failed (expected \"[REDACTED:ip]\")"
    for value in ["10.0.0.7", "[REDACTED:path]", "", "unknown"]:
        rec = with_details("auth.failure", remote_ip=value)
        assert (expected, False) == verdicts(fast, ref, rec)


# Records that must fail, and the exact reason RecordValidator gives.
BAD: list[tuple[dict[str, Any], str]] = [
    (
        with_details("ai.call", tokens={"input": -1, "output": 0}),
        "ai.call: /details/tokens/input: 'minimum' rule failed",
    ),
    (
        with_details("ai.call", cache="maybe"),
        'ai.call: /details/cache: \'enum\' rule failed (expected one of "hit", "miss")',
    ),
    (
        with_details("ai.call", cycle_id="cycle-1"),
        "ai.call: /details/cycle_id: 'pattern' rule failed",
    ),
    (
        with_details("ai.call", redactions={"IP": 1}),
        "ai.call: /details/redactions: 'propertyNames' rule failed",
    ),
    (
        with_details("ai.call", redactions={"ip": -1}),
        "ai.call: /details/redactions/ip: 'minimum' rule failed",
    ),
    (
        with_details("ai.call", prompt_size=1.5),
        "ai.call: /details/prompt_size: 'type' rule failed (expected integer)",
    ),
    (
        with_details("daemon.stop", reason="crash"),
        "daemon.stop: /details/reason: 'enum' rule failed "
        '(expected one of "signal", "request", "error")',
    ),
    (
        with_details("daemon.stop", uptime_s=-0.5),
        "daemon.stop: /details/uptime_s: 'minimum' rule failed",
    ),
    (
        with_details("daemon.start", plugins=[{"name": "x", "version": "1", "path": "/opt"}]),
        "daemon.start: /details/plugins/0: 'additionalProperties' rule failed "
        "(unexpected property)",
    ),
    (
        with_details("finding.emit", payload_hash="sha256:abc"),
        "finding.emit: /details/payload_hash: 'pattern' rule failed",
    ),
    (
        with_details("finding.emit", severity="INFO"),
        "finding.emit: /details/severity: 'enum' rule failed "
        '(expected one of "WARNING", "CRITICAL")',
    ),
    (
        with_details("config.reload", changes=[{"field": "x", "before": [1], "after": 2}]),
        "config.reload: /details/changes/0/before: 'anyOf' rule failed",
    ),
    (
        with_details("config.reload", uid=-1),
        "config.reload: /details/uid: 'minimum' rule failed",
    ),
    (
        with_details("audit.start", last_hash="sha256:0"),
        "audit.start: /details/last_hash: 'anyOf' rule failed",
    ),
    (
        with_details("audit.rotate", new_file="logs/kerno-audit.jsonl"),
        "audit.rotate: /details/new_file: 'pattern' rule failed",
    ),
    (
        with_details("audit.loss", count=0),
        "audit.loss: /details/count: 'minimum' rule failed",
    ),
    (
        with_details("audit.loss", first_seq=_DELETE),
        "audit.loss: /details: 'dependentRequired' rule failed (missing \"first_seq\")",
    ),
    (
        with_details("audit.loss", types={"ai.call": -2}),
        "audit.loss: /details/types/ai.call: 'minimum' rule failed",
    ),
    (
        with_details("audit.recover", bytes=0),
        "audit.recover: /details/bytes: 'minimum' rule failed",
    ),
    (
        with_details("audit.checkpoint", algorithm="rsa"),
        "audit.checkpoint: /details/algorithm: 'const' rule failed (expected \"ed25519\")",
    ),
    (
        with_details("audit.checkpoint", signature=SIG[:-4]),
        "audit.checkpoint: /details/signature: 'pattern' rule failed",
    ),
    (
        with_details("bpf.load", attach="raw_syscalls:sys_enter"),
        "bpf.load: /details/attach: 'type' rule failed (expected array)",
    ),
    # The envelope.
    (record("ai.call", v="2"), "ai.call: /v: 'const' rule failed (expected \"1\")"),
    (record("ai.call", seq=-1), "ai.call: /seq: 'minimum' rule failed"),
    (record("ai.call", ts="2026-11-27T18:00:00.123Z"), "ai.call: /ts: 'pattern' rule failed"),
    (
        record("ai.call", ts="2026-11-27T18:00:00.123456789+00:00"),
        "ai.call: /ts: 'pattern' rule failed",
    ),
    (
        record("ai.call", actor="doctor/engine"),
        "ai.call: /actor: 'const' rule failed (expected \"ai/analyzer\")",
    ),
    (record("config.reload", actor="kerno/config"), "config.reload: /actor: 'pattern' rule failed"),
    (record("config.reload", actor="config/"), "config.reload: /actor: 'pattern' rule failed"),
    (
        record("ai.call", severity="WARNING"),
        "ai.call: /severity: 'enum' rule failed "
        '(expected one of "TRACE", "DEBUG", "INFO", "WARN", "ERROR", "FATAL")',
    ),
    (
        record("ai.call", outcome="ok"),
        'ai.call: /outcome: \'enum\' rule failed (expected one of "success", "failure", "unknown")',
    ),
    (
        record("ai.call", trace_id="0AF7651916CD43DD8448EB211C80319C"),
        "ai.call: /trace_id: 'pattern' rule failed",
    ),
    (record("ai.call", span_id="b7ad"), "ai.call: /span_id: 'pattern' rule failed"),
    (record("ai.call", prev="sha256:"), "ai.call: /prev: 'pattern' rule failed"),
    (record("ai.call", details=[]), "ai.call: /details: 'type' rule failed (expected object)"),
    (
        record("ai.call", resource={"pid": 4242}),
        "ai.call: /resource/pid: 'type' rule failed (expected string)",
    ),
    (
        record("ai.call", extra=1),
        "ai.call: (root): 'additionalProperties' rule failed (unexpected property)",
    ),
    (record("ai.call", type="foo.bar"), "foo.bar: /type: 'enum' rule failed (unknown event type)"),
    (
        record("ai.call", type="Foo"),
        "(invalid type): /type: 'enum' rule failed (unknown event type)",
    ),
    (record("ai.call", type=7), "(invalid type): /type: 'type' rule failed (expected string)"),
    (
        {k: v for k, v in record("ai.call").items() if k != "type"},
        "(no type): (root): 'required' rule failed (missing \"type\")",
    ),
]


@pytest.mark.parametrize(("rec", "expected"), BAD, ids=[r for _, r in BAD])
def test_bad_records_give_exact_reasons(
    fast: RecordValidator, ref: Any, rec: dict[str, Any], expected: str
) -> None:
    assert (expected, False) == verdicts(fast, ref, rec)


def test_config_actor_takes_any_source(fast: RecordValidator, ref: Any) -> None:
    for actor in ["config/file", "config/SIGHUP", "config/env"]:
        assert verdicts(fast, ref, record("config.reload", actor=actor)) == (None, True)


def test_reference_check_uses_the_same_format(ref: Any) -> None:
    for rec, expected in BAD[:3]:
        assert expected == reference_check(ref, rec)
    assert reference_check(ref, record("ai.call")) is None


def test_unknown_type_names_are_shown_only_when_harmless(fast: RecordValidator) -> None:
    reason = fast.check(record("ai.call", type="sk-abcdefghijklmnopqrstuvwxyz"))
    assert reason == "(invalid type): /type: 'enum' rule failed (unknown event type)"


def test_keys_that_may_be_leaks_are_hidden_in_pointers(fast: RecordValidator) -> None:
    plugin = EventType(
        "acme.count",
        "acme/counter",
        schema={
            "type": "object",
            "properties": {
                "counts": {
                    "description": "Anything -> count.",
                    "type": "object",
                    "additionalProperties": {"type": "integer"},
                }
            },
            "additionalProperties": False,
        },
    )
    validator = RecordValidator(SchemaSet.builtin().with_types({"acme.count": plugin}))
    rec = {"v": "1", "ts": "2026-11-27T18:00:00.123456789Z", "type": "acme.count"}
    rec |= {"actor": "acme/counter", "details": {"counts": {"alice@example.com": "x"}}}
    expected = "acme.count: /details/counts/[REDACTED:key]: 'type' rule failed (expected integer)"
    assert expected == validator.check(rec)
    rec["details"] = {"counts": {"fine_key": "x"}}
    expected = "acme.count: /details/counts/fine_key: 'type' rule failed (expected integer)"
    assert expected == validator.check(rec)


def test_non_json_values_give_a_reason_instead_of_raising(fast: RecordValidator) -> None:
    cases = [
        (with_details("ai.call", model=b"x"), "ai.call: /details/model: not a JSON value (bytes)"),
        (
            with_details("ai.call", redactions={1: 2}),
            "ai.call: /details/redactions: object key is not a string (int)",
        ),
        (
            with_details("ai.call", attach={1, 2}),
            "ai.call: /details/attach: not a JSON value (set)",
        ),
        (
            with_details("ai.call", duration_ms=float("nan")),
            "ai.call: /details/duration_ms: 'type' rule failed (expected number)",
        ),
        ([1, 2], "(no type): (root): 'type' rule failed (expected object)"),
        (object(), "(no type): (root): not a JSON value (object)"),
    ]
    for rec, expected in cases:
        assert expected == fast.check(rec)  # type: ignore[arg-type]


def test_deep_nesting_gives_a_reason(fast: RecordValidator) -> None:
    deep: list[Any] = []
    for _ in range(5000):
        deep = [deep]
    expected = "ai.call: /details/model" + "/0" * 30 + ": nested too deeply"
    assert fast.check(with_details("ai.call", model=deep)) == expected


def test_any_mapping_is_accepted(fast: RecordValidator) -> None:
    assert fast.check(MappingProxyType(record("ai.call"))) is None


def test_tuples_are_arrays_as_the_encoder_writes_them(fast: RecordValidator) -> None:
    assert fast.check(with_details("bpf.load", attach=("a:b", "c:d"))) is None


# --- plugin types ----------------------------------------------------------------------------

ACME = EventType(
    "acme.scan",
    "acme/scanner",
    schema={
        "type": "object",
        "properties": {
            "target": {"$ref": "common.schema.json#/$defs/safe_text", "description": "Scanned."},
            "findings": {"type": "integer", "minimum": 0, "description": "How many."},
        },
        "required": ["target", "findings"],
        "additionalProperties": False,
    },
    source="acme-kerno",
)


def acme(**details: Any) -> dict[str, Any]:
    rec = record("plugin.load", type="acme.scan", actor="acme/scanner")
    rec["details"] = {"target": "web tier", "findings": 2} | details
    return rec


def test_plugin_type_is_validated_and_published(tmp_path: Path) -> None:
    extended = SchemaSet.builtin().with_types({"acme.scan": ACME})
    assert [*BUILTIN_TYPES, "acme.scan"] == extended.types()
    docs = extended.documents()
    assert "acme.scan" in docs[RECORD]["properties"]["type"]["enum"]
    assert docs["acme.scan.schema.json"]["$id"] == BASE_URI + "acme.scan.schema.json"
    dispatch = docs[RECORD]["allOf"][-1]
    assert dispatch["then"]["properties"]["actor"] == {"const": "acme/scanner"}
    assert dispatch["then"]["properties"]["details"] == {"$ref": "acme.scan.schema.json"}

    fast, ref = RecordValidator(extended), reference_validator(extended)
    assert verdicts(fast, ref, acme()) == (None, True)
    expected = "acme.scan: /details/target: 'not' rule failed (matches leak pattern \"ip\")"
    assert (expected, False) == verdicts(fast, ref, acme(target="10.0.0.1"))
    expected = "acme.scan: /details/findings: 'minimum' rule failed"
    assert (expected, False) == verdicts(fast, ref, acme(findings=-1))

    # The built-in set is untouched.
    assert "acme.scan" not in SchemaSet.builtin().types()
    assert (
        RecordValidator(SchemaSet.builtin()).check(acme())
        == "acme.scan: /type: 'enum' rule failed (unknown event type)"
    )

    written = extended.export(tmp_path)
    assert tmp_path / "acme.scan.schema.json" in written


def test_plugin_type_with_prefix_actor() -> None:
    extended = SchemaSet.builtin().with_types({"acme.scan": _plugin(actor="acme.v2/")})
    fast = RecordValidator(extended)
    rec = record("plugin.load", type="acme.scan", actor="acme.v2/x", details={})
    assert fast.check(rec) is None
    rec["actor"] = "acmexv2/x"  # the "." in the prefix is literal
    assert fast.check(rec) == "acme.scan: /actor: 'pattern' rule failed"
