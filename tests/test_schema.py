"""The published schema set (kerno_otel/records/schema.py and schemas/kerno-audit/v1/).

The records built here (``GOOD``, ``record``, ``with_details``) are shared with
test_validate.py, which checks verdicts and reasons on them.
"""

from __future__ import annotations

import base64
import copy
import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator
from referencing import Registry, Resource

from kerno_otel.records.catalogue import BUILTIN_TYPES, EventType
from kerno_otel.records.naming import BASE_URI, schema_file
from kerno_otel.records.patterns import LEAK_PATTERNS
from kerno_otel.records.schema import (
    BUNDLE,
    COMMON,
    RECORD,
    SchemaSet,
    common_document,
    dumps,
    record_document,
)

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


@pytest.fixture(scope="module")
def schemas() -> SchemaSet:
    return SchemaSet.builtin()


# --- the files -------------------------------------------------------------------------------


def test_every_catalogue_type_has_a_schema_file_and_vice_versa() -> None:
    expected = {schema_file(name) for name in BUILTIN_TYPES} | {COMMON, RECORD, BUNDLE}
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


def test_committed_bundle_is_what_export_writes(tmp_path: Path) -> None:
    SchemaSet.builtin().export(tmp_path)
    assert (SCHEMA_DIR / BUNDLE).read_bytes() == (tmp_path / BUNDLE).read_bytes()


def test_bundle_embeds_every_file_under_its_own_id(schemas: SchemaSet) -> None:
    docs = schemas.documents()
    bundle = docs.pop(BUNDLE)
    assert bundle["$ref"] == RECORD
    assert docs == bundle["$defs"]
    assert [BASE_URI + name for name in docs] == [d["$id"] for d in bundle["$defs"].values()]


def test_python_jsonschema_takes_the_bundle_alone(schemas: SchemaSet) -> None:
    # No registry, no retrieval: every $ref resolves inside the one document.
    validator = Draft202012Validator(schemas.documents()[BUNDLE])
    assert validator.is_valid(record("ai.call"))
    assert not validator.is_valid(with_details("ai.call", error="pid=4242"))


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


# --- plugin types ----------------------------------------------------------------------------


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


def doc_snippets(language: str) -> list[str]:
    """The ```<language> blocks of docs/audit-schema.md, in order."""
    parts = DOC.read_text(encoding="utf-8").split(f"```{language}\n")[1:]
    return [part.split("```", 1)[0] for part in parts]


@pytest.mark.parametrize(
    ("index", "bad_output"),
    [(0, "1: $.details.error: not\n"), (1, "1\n")],
    ids=["jsonschema", "rs"],
)
def test_docs_python_recipes_run_on_the_exported_bundle(
    tmp_path: Path, index: int, bad_output: str
) -> None:
    # As the doc says: `kerno-otel schema export kerno-schemas`, then the recipe beside it.
    SchemaSet.builtin().export(tmp_path / "kerno-schemas")
    script = tmp_path / "recipe.py"
    script.write_text(doc_snippets("python")[index])
    good = tmp_path / "good.jsonl"
    good.write_text(json.dumps(record("ai.call")) + "\n")
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps(with_details("ai.call", error="pid=4242")) + "\n")
    for log, expected in [(good, (0, "")), (bad, (1, bad_output))]:
        done = subprocess.run(
            [sys.executable, str(script), str(log)], capture_output=True, text=True, cwd=tmp_path
        )
        assert (done.returncode, done.stdout) == expected, done.stderr
