"""The one module on OpenTelemetry SDK internals: its guard, and the fallback beside it."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from helpers import stream_records
from opentelemetry._logs import LogRecord
from opentelemetry.sdk._logs import LoggerProvider

from kerno_otel.audit import sdk
from kerno_otel.audit.log import AuditLog
from kerno_otel.config import AuditConfig


def test_the_installed_sdk_takes_the_fast_path() -> None:
    """Fails loudly when an SDK release moves the internals the fast path uses: update
    kerno_otel/audit/sdk.py (and the pin in pyproject.toml) after checking them."""
    provider = LoggerProvider()
    logger = provider.get_logger("t")
    assert sdk.fast_path_available(provider, logger)
    record = LogRecord(timestamp=1, event_name="a.b", attributes={"k": {"nested": [1]}})
    made = sdk.record_maker(provider, logger, io.StringIO())(record)
    assert made.log_record is record
    assert made.log_record.attributes == {"k": {"nested": [1]}}  # as given, not re-cleaned
    assert made.resource is provider.resource


def test_an_sdk_without_the_internals_falls_back_to_the_public_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # As if a release had reshaped ReadWriteLogRecord.
    monkeypatch.setattr(sdk, "_FIELDS", ("log_record", "resource", "scope", "limits", "context"))
    err = io.StringIO()
    config = AuditConfig(file_path=str(tmp_path / "kerno-audit.jsonl"), pipeline="thread")
    with AuditLog(config, stderr=err) as log:
        log.emit("bpf.load", details={"program": "p", "attach": ["a:b"], "success": True})
    assert "using the public path" in err.getvalue()
    records = stream_records(Path(config.file_path))
    assert [r["type"] for r in records] == ["audit.start", "bpf.load"]
    assert records[1]["details"] == {"program": "p", "attach": ["a:b"], "success": True}
