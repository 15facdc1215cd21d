"""Going on in the parent when the audit worker is lost: the verdict on its exit, the
in-process sealer, and what the worker left replayed into it in order."""

from __future__ import annotations

import io
from pathlib import Path

import orjson
from helpers import check_chain, stream_lines, stream_records

from kerno_otel.audit.pipeline import build_cleaner
from kerno_otel.audit.worker import fallback
from kerno_otel.audit.worker import protocol as wire
from kerno_otel.config import AuditConfig

RESOURCE = {"service.name": "kerno", "service.instance.id": "i-1", "host.name": "h"}


def init(tmp_path: Path, **overrides: object) -> wire.Init:
    values: dict[str, object] = {"file_path": str(tmp_path / "kerno-audit.jsonl")}
    values.update(overrides)
    config = AuditConfig(**values)  # type: ignore[arg-type]
    return wire.Init(config, (), (), RESOURCE, "0")


def test_a_worker_stopped_on_a_write_error_stops_this_process_under_exit(tmp_path: Path) -> None:
    err, codes = io.StringIO(), list[int]()
    go_on = fallback.may_go_on([0, 74], init(tmp_path, on_write_error="exit"), err, codes.append)
    assert (go_on, codes) == (False, [74])
    assert err.getvalue() == (
        "kerno-otel: audit: the audit worker stopped on a write error "
        "(on_write_error: exit); stopping\n"
    )


def test_any_other_end_is_said_and_the_log_goes_on_here(tmp_path: Path) -> None:
    err, codes = io.StringIO(), list[int]()
    # 74 without on_write_error: exit is just a status; the first non-zero one is named.
    assert fallback.may_go_on([-9, 74], init(tmp_path), err, codes.append)
    assert fallback.may_go_on([0, 3], init(tmp_path), err, codes.append)
    assert codes == []
    assert err.getvalue() == (
        "kerno-otel: audit: the audit worker stopped unexpectedly (signal 9); "
        "the audit pipeline continues in this process\n"
        "kerno-otel: audit: the audit worker stopped unexpectedly (status 3); "
        "the audit pipeline continues in this process\n"
    )


def raw(plugin: str) -> bytes:
    details = {"plugin": plugin, "distribution": "d", "version": "1", "hooks": []}
    fields = [1_700_000_000_000_000_000, "plugin.load", "plugins/manager", "INFO", "success"]
    return wire.RAW + orjson.dumps([*fields, details, 0, 0]) + b"\n"


def test_replay_records_the_loss_then_the_waiting_frames_in_order_then_the_drops(
    tmp_path: Path,
) -> None:
    start = init(tmp_path, pipeline="process")
    local = fallback.local_transport(start, io.StringIO(), lambda code: None)
    local.open()
    # 10 records handed to the worker, 4 confirmed durable, 3 still waiting here
    # (two RAW frames and a DROP of one): 3 lost with the worker.
    waiting = raw("w1") + raw("w2") + wire.message(wire.DROP, {"types": {"ai.call": 1}})
    fallback.replay(
        local.sealer,
        waiting,
        records=10,
        durable=4,
        dropped={"bpf.load": 2},
        cleaner=build_cleaner(start.config, (), (), RESOURCE),
    )
    local.close()
    live = Path(start.config.file_path)
    records = stream_records(live)
    assert check_chain(stream_lines(live)) == []
    assert [r["type"] for r in records] == [
        "audit.start",
        "audit.loss",
        "plugin.load",
        "plugin.load",
        "audit.loss",
        "audit.loss",
    ]
    lost, from_frame, from_here = (records[i]["details"] for i in (1, 4, 5))
    assert (lost["reason"], lost["count"]) == ("worker_lost", 3)
    assert [r["details"]["plugin"] for r in records[2:4]] == ["w1", "w2"]
    assert (from_frame["reason"], from_frame["types"]) == ("queue_full", {"ai.call": 1})
    assert (from_here["reason"], from_here["types"]) == ("queue_full", {"bpf.load": 2})


def test_nothing_is_counted_lost_when_the_worker_confirmed_all_it_got(tmp_path: Path) -> None:
    start = init(tmp_path, pipeline="process")
    local = fallback.local_transport(start, io.StringIO(), lambda code: None)
    local.open()
    fallback.replay(
        local.sealer,
        raw("w1"),
        records=5,
        durable=4,
        dropped={},
        cleaner=build_cleaner(start.config, (), (), RESOURCE),
    )
    local.close()
    records = stream_records(Path(start.config.file_path))
    assert [r["type"] for r in records] == ["audit.start", "plugin.load"]
