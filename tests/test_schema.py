"""The published schema set (kerno_otel/_schema.py and schemas/kerno-audit/v1/)."""

from __future__ import annotations

import base64
import copy
import json
import random
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import MappingProxyType
from typing import Any

import pytest
from jsonschema import Draft202012Validator
from referencing import Registry, Resource

from kerno_otel._catalogue import BUILTIN_TYPES, EventType
from kerno_otel._patterns import LEAK_PATTERNS
from kerno_otel._schema import (
    BASE_URI,
    COMMON,
    RECORD,
    SchemaSet,
    common_document,
    dumps,
    record_document,
    schema_file,
)
from kerno_otel._validate import RecordValidator, reference_check, reference_validator

REPO = Path(__file__).resolve().parent.parent
SCHEMA_DIR = REPO / "schemas" / "kerno-audit" / "v1"
H = "sha256:" + "ab" * 32
SIG = base64.b64encode(bytes(range(64))).decode()

#: A valid details object for every built-in type, with the actor it needs.
GOOD: dict[str, tuple[str, dict[str, Any]]] = {
    "daemon.start": (
        "kerno/start",
        {
            "version": "0.1.0",
            "config_path": "/etc/[REDACTED:path]",
            "plugins": [{"name": "lifecycle", "version": "0.1.0"}],
        },
    ),
    "daemon.stop": ("kerno/start", {"version": "0.1.0", "reason": "signal", "uptime_s": 12.5}),
    "daemon.panic": (
        "kerno/start",
        {"version": "0.1.0", "exception_type": "builtins.RuntimeError", "panic_digest": H},
    ),
    "config.reload": (
        "config/SIGHUP",
        {
            "path": "/etc/[REDACTED:path]",
            "source": "SIGHUP",
            "uid": 0,
            "changed_fields": ["doctor.interval", "ai.api_key", "ai.enabled", "ai.max_tokens"],
            "applied": ["doctor.interval", "ai.enabled"],
            "restart_required": ["ai.max_tokens"],
            "changes": [
                {"field": "doctor.interval", "before": "30s", "after": "60s"},
                {"field": "ai.api_key", "before": "[REDACTED:secret]", "after": "***"},
                {"field": "ai.enabled", "before": False, "after": True},
                {"field": "ai.max_tokens", "before": None, "after": 1024},
            ],
        },
    ),
    "ai.call": (
        "ai/analyzer",
        {
            "provider": "anthropic",
            "model": "claude-sonnet-4-5",
            "cache": "miss",
            "tokens": {"input": 1234, "output": 321},
            "prompt_size": 4567,
            "response_size": 1200,
            "redactions": {"ip": 2, "pid": 1, "path": 0},
            "duration_ms": 812.5,
            "privacy_mode": "redacted",
            "cycle_id": "cycle-20261127-180000",
        },
    ),
    "finding.emit": (
        "doctor/engine",
        {
            "rule": "fd_leak",
            "severity": "WARNING",
            "sink": "webhook",
            "payload_hash": H,
            "cycle_id": "cycle-20261127-180000-2",
            "delivered": False,
            "error": "webhook answered 503",
        },
    ),
    "auth.failure": (
        "http/server",
        {
            "endpoint": "/metrics",
            "reason": "token_mismatch",
            "remote_ip": "[REDACTED:ip]",
            "suppressed": 3,
        },
    ),
    "bpf.load": (
        "bpf/loader",
        {
            "program": "syscall_latency",
            "attach": ["raw_syscalls:sys_enter", "raw_syscalls:sys_exit"],
            "success": False,
            "error": "cannot open /home/[REDACTED:path]: permission denied for [REDACTED:pid]",
        },
    ),
    "plugin.load": (
        "plugins/manager",
        {
            "plugin": "procfs",
            "distribution": "kerno-otel",
            "version": "0.1.0",
            "hooks": ["register_sources"],
        },
    ),
    "plugin.error": (
        "plugins/manager",
        {
            "plugin": "slack",
            "distribution": "kerno-otel-slack",
            "version": "1.2.0",
            "hook": "deliver_finding",
            "error_type": "requests.exceptions.ConnectionError",
            "error_digest": H,
        },
    ),
    "audit.start": (
        "audit/writer",
        {
            "file": "kerno-audit.jsonl",
            "resumed": False,
            "last_seq": None,
            "last_hash": None,
            "fsync": "batch",
            "version": "0.1.0",
        },
    ),
    "audit.rotate": (
        "audit/writer",
        {
            "old_file": "kerno-audit-20261127T180000Z.jsonl",
            "new_file": "kerno-audit.jsonl",
            "last_seq": 41,
            "last_hash": H,
            "reason": "size",
        },
    ),
    "audit.loss": (
        "audit/writer",
        {
            "count": 3,
            "reason": "write_error",
            "first_seq": 42,
            "last_seq": 44,
            "after_seq": 41,
            "types": {"ai.call": 2, "finding.emit": 1},
        },
    ),
    "audit.recover": (
        "audit/writer",
        {
            "file": "kerno-audit.jsonl",
            "bytes": 37,
            "digest": H,
            "set_aside": "kerno-audit.jsonl.torn",
        },
    ),
    "audit.checkpoint": (
        "audit/writer",
        {
            "stream": "0f1e2d3c",
            "seq": 1000,
            "hash": H,
            "key_id": "ed25519:ab12cd34",
            "algorithm": "ed25519",
            "signature": SIG,
        },
    ),
}

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


def record(type_name: str, **overrides: Any) -> dict[str, Any]:
    """A fresh, valid, complete record of ``type_name``, with ``overrides`` applied."""
    actor, details = GOOD[type_name]
    rec: dict[str, Any] = {
        "v": "1",
        "seq": 42,
        "ts": "2026-11-27T18:00:00.123456789Z",
        "type": type_name,
        "actor": actor,
        "severity": "INFO",
        "outcome": "success",
        "details": copy.deepcopy(details),
        "resource": {
            "service.name": "kerno",
            "service.instance.id": "6f1c0b1e-3a0d-4c7e-9d8e-2b8c1b7f4a11",
            "host.name": "web-01",
        },
        "trace_id": "0af7651916cd43dd8448eb211c80319c",
        "span_id": "b7ad6b7169203331",
        "prev": "sha256:" + "0" * 64,
    }
    rec.update(overrides)
    return rec


def with_details(type_name: str, **changes: Any) -> dict[str, Any]:
    rec = record(type_name)
    for key, value in changes.items():
        if value is _DELETE:
            del rec["details"][key]
        else:
            rec["details"][key] = value
    return rec


_DELETE = object()


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
def schemas() -> SchemaSet:
    return SchemaSet.builtin()


@pytest.fixture(scope="module")
def fast(schemas: SchemaSet) -> RecordValidator:
    return RecordValidator(schemas)


@pytest.fixture(scope="module")
def ref(schemas: SchemaSet) -> Any:
    return reference_validator(schemas)


def verdicts(fast: RecordValidator, ref: Any, rec: Any) -> tuple[str | None, bool]:
    """RecordValidator's reason, after checking the reference validator agrees on the verdict."""
    reason = fast.check(rec)
    assert (reason is None) == ref.is_valid(rec), (reason, rec)
    return reason, reason is None


# --- the files -------------------------------------------------------------------------------


def test_every_catalogue_type_has_a_schema_file_and_vice_versa() -> None:
    expected = {schema_file(name) for name in BUILTIN_TYPES} | {COMMON, RECORD}
    assert expected == {p.name for p in SCHEMA_DIR.iterdir()}


@pytest.mark.parametrize("path", sorted(SCHEMA_DIR.iterdir()), ids=lambda p: p.name)
def test_schema_file_is_valid_2020_12_with_its_id(path: Path) -> None:
    doc = json.loads(path.read_text(encoding="utf-8"))
    Draft202012Validator.check_schema(doc)
    assert doc["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert BASE_URI + path.name == doc["$id"]
    assert dumps(doc) == path.read_text(encoding="utf-8"), "not in canonical form"


def _refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        if "$ref" in node:
            yield node["$ref"]
        for value in node.values():
            yield from _refs(value)
    elif isinstance(node, list):
        for value in node:
            yield from _refs(value)


def test_references_are_relative(schemas: SchemaSet) -> None:
    for doc in schemas.documents().values():
        for target in _refs(doc):
            assert "://" not in target, target


def _undescribed(schema: dict[str, Any], where: str) -> Iterator[str]:
    for name, prop in schema.get("properties", {}).items():
        if "description" not in prop:
            yield f"{where}/{name}"
        for nested in (prop, prop.get("items", {})):
            yield from _undescribed(nested, f"{where}/{name}")


@pytest.mark.parametrize("type_name", list(BUILTIN_TYPES))
def test_details_schemas_are_closed_and_described(schemas: SchemaSet, type_name: str) -> None:
    doc = schemas.documents()[schema_file(type_name)]
    assert doc["type"] == "object"
    assert doc["additionalProperties"] is False
    assert set(doc["required"]) <= set(doc["properties"])
    assert list(_undescribed(doc, type_name)) == []


def test_record_schema_fields_in_record_order(schemas: SchemaSet) -> None:
    doc = schemas.documents()[RECORD]
    expected = ["v", "seq", "ts", "type", "actor", "severity", "outcome", "details"]
    expected += ["resource", "trace_id", "span_id", "prev"]
    assert expected == list(doc["properties"])
    assert doc["required"] == ["v", "ts", "type", "actor", "details"]
    assert list(BUILTIN_TYPES) == doc["properties"]["type"]["enum"]
    assert list(_undescribed(doc, "record")) == []


def test_generated_files_equal_committed() -> None:
    assert dumps(common_document()) == (SCHEMA_DIR / COMMON).read_text(encoding="utf-8")
    committed = (SCHEMA_DIR / RECORD).read_text(encoding="utf-8")
    assert dumps(record_document(BUILTIN_TYPES)) == committed


def test_gen_schemas_check_passes() -> None:
    script = REPO / "scripts" / "gen_schemas.py"
    done = subprocess.run([sys.executable, str(script), "--check"], capture_output=True, text=True)
    assert (done.returncode, done.stdout, done.stderr) == (0, "", "")


def test_common_carries_every_leak_pattern() -> None:
    safe_text = common_document()["$defs"]["safe_text"]
    assert list(LEAK_PATTERNS) == [alt["title"] for alt in safe_text["not"]["anyOf"]]


@pytest.mark.skipif(shutil.which("node") is None, reason="needs node for ECMA-262")
def test_every_pattern_compiles_as_ecma_262_unicode(schemas: SchemaSet) -> None:
    # What ajv and other JavaScript validators do with "pattern" (the `u` flag).
    patterns = []
    for doc in schemas.documents().values():
        patterns += [p for p in _keyword_values(doc, "pattern")]
    script = "for (const p of JSON.parse(process.argv[1])) new RegExp(p, 'u');"
    done = subprocess.run(["node", "-e", script, json.dumps(patterns)], capture_output=True)
    assert done.returncode == 0, done.stderr.decode()


def _keyword_values(node: Any, keyword: str) -> Iterator[Any]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == keyword and isinstance(value, str):
                yield value
            yield from _keyword_values(value, keyword)
    elif isinstance(node, list):
        for value in node:
            yield from _keyword_values(value, keyword)


def test_builtin_is_loaded_once() -> None:
    assert SchemaSet.builtin() is SchemaSet.builtin()


def test_export_writes_the_published_set(tmp_path: Path) -> None:
    out = tmp_path / "a" / "b"
    written = SchemaSet.builtin().export(out)
    assert sorted(p.name for p in SCHEMA_DIR.iterdir()) == sorted(p.name for p in written)
    for path in written:
        assert (SCHEMA_DIR / path.name).read_bytes() == path.read_bytes()


def test_a_third_party_validator_needs_only_the_directory(tmp_path: Path) -> None:
    # The recipe docs/audit-schema.md gives reviewers.
    SchemaSet.builtin().export(tmp_path)
    docs = [json.loads(p.read_text()) for p in tmp_path.glob("*.schema.json")]
    registry: Registry[Any] = Registry().with_resources(
        (doc["$id"], Resource.from_contents(doc)) for doc in docs
    )
    validator = Draft202012Validator(
        json.loads((tmp_path / "record.schema.json").read_text()), registry=registry
    )
    assert validator.is_valid(record("ai.call"))
    assert not validator.is_valid(with_details("ai.call", error="pid=4242"))


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


def _plugin(name: str = "acme.scan", actor: str = "acme/scanner", **schema: Any) -> EventType:
    base: dict[str, Any] = {"type": "object", "properties": {}, "additionalProperties": False}
    return EventType(name, actor, schema=base | schema, source="acme-kerno")


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (
            {"ai.call": _plugin("ai.call")},
            "event type 'ai.call' from acme-kerno: clashes with the type of the same name "
            "from kerno-otel",
        ),
        (
            {"acme.scan": _plugin(properties={"x": {"type": "nope"}})},
            "event type 'acme.scan' from acme-kerno: not a valid 2020-12 schema at "
            "/properties/x/type: 'nope' is not valid under any of the given schemas",
        ),
        (
            {"acme.scan": _plugin(additionalProperties=True)},
            "event type 'acme.scan' from acme-kerno: details must be closed: "
            '"type": "object" and "additionalProperties": false',
        ),
        (
            {"acme.scan": EventType("acme.scan", "acme/scanner", source="acme-kerno")},
            "event type 'acme.scan' from acme-kerno: no details schema "
            "(EventType.schema must be a dict)",
        ),
        (
            {"acme": _plugin("acme")},
            "event type 'acme' from acme-kerno: a type name must match "
            r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+$ (at most 64 characters)",
        ),
        (
            {"acme.other": _plugin()},
            "event type 'acme.other' from acme-kerno: registered under a different name "
            "('acme.scan')",
        ),
        (
            {"acme.scan": _plugin(actor="Acme")},
            "event type 'acme.scan' from acme-kerno: actor 'Acme' must match "
            "^[a-z0-9_.-]+/[A-Za-z0-9_.-]+$ (or be a prefix 'area/')",
        ),
        (
            {"acme.scan": _plugin(**{"$id": "https://acme.example/x.json"})},
            "event type 'acme.scan' from acme-kerno: $id must be absent or "
            "https://kerno.dev/schemas/kerno-audit/v1/acme.scan.schema.json "
            "(the set is published together)",
        ),
    ],
)
def test_bad_plugin_types_are_refused_by_name(extra: dict[str, EventType], message: str) -> None:
    with pytest.raises(ValueError) as excinfo:
        SchemaSet.builtin().with_types(extra)
    assert message == str(excinfo.value)


def test_plugin_schema_that_does_not_compile_is_refused() -> None:
    bad = _plugin(properties={"x": {"$ref": "common.schema.json#/$defs/nope"}})
    with pytest.raises(ValueError) as excinfo:
        SchemaSet.builtin().with_types({"acme.scan": bad})
    assert str(excinfo.value).startswith(
        "event type 'acme.scan' from acme-kerno: schema does not compile: "
    )


def test_plugin_type_with_prefix_actor() -> None:
    extended = SchemaSet.builtin().with_types({"acme.scan": _plugin(actor="acme.v2/")})
    fast = RecordValidator(extended)
    rec = record("plugin.load", type="acme.scan", actor="acme.v2/x", details={})
    assert fast.check(rec) is None
    rec["actor"] = "acmexv2/x"  # the "." in the prefix is literal
    assert fast.check(rec) == "acme.scan: /actor: 'pattern' rule failed"


# --- speed (printed, never asserted) ---------------------------------------------------------


# --- docs/audit-schema.md --------------------------------------------------------------------

DOC = REPO / "docs" / "audit-schema.md"


def test_docs_describe_every_type_and_field(schemas: SchemaSet) -> None:
    text = DOC.read_text(encoding="utf-8")
    sections = {part.split("\n", 1)[0].strip(): part for part in text.split("\n### ")[1:]}
    missing = []
    for type_name in BUILTIN_TYPES:
        section = sections.get(type_name, "")
        for field in schemas.documents()[schema_file(type_name)]["properties"]:
            if f"| `{field}`" not in section:
                missing.append(f"{type_name}.{field}")
    for field in schemas.documents()[RECORD]["properties"]:
        if f"| `{field}` |" not in text:
            missing.append(f"record.{field}")
    assert missing == []


def test_docs_python_recipe_runs(tmp_path: Path) -> None:
    snippet = DOC.read_text(encoding="utf-8").split("```python\n", 1)[1].split("```", 1)[0]
    script = tmp_path / "recipe.py"
    script.write_text(snippet)
    good = tmp_path / "good.jsonl"
    good.write_text(json.dumps(record("ai.call")) + "\n")
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps(with_details("ai.call", error="pid=4242")) + "\n")
    for log, expected in [(good, (0, "")), (bad, (1, "1: $.details.error: not\n"))]:
        done = subprocess.run(
            [sys.executable, str(script), str(log)], capture_output=True, text=True, cwd=REPO
        )
        assert (done.returncode, done.stdout) == expected, done.stderr
