from __future__ import annotations

import gzip
import hashlib
import os
import stat
import time
from pathlib import Path

import pytest

from kerno_otel.audit import files as _files
from kerno_otel.audit import stream as _stream
from kerno_otel.audit.chain import line_hash


def test_open_append_creates_0600_and_tightens(tmp_path: Path) -> None:
    path = tmp_path / "a.jsonl"
    os.close(_files.open_append(path))
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    path.chmod(0o644)
    os.close(_files.open_append(path))
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_open_append_refuses_symlink(tmp_path: Path) -> None:
    target = tmp_path / "elsewhere.jsonl"
    target.write_bytes(b"")
    link = tmp_path / "audit.jsonl"
    link.symlink_to(target)
    with pytest.raises(_files.AuditFileError) as info:
        _files.open_append(link)
    assert (
        str(info.value) == f"{link}: is a symbolic link; refusing to write the audit log through it"
    )


def test_ensure_directory_creates_0700(tmp_path: Path) -> None:
    directory = tmp_path / "a" / "b"
    _files.ensure_directory(directory)
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700


def test_stamp_and_rotated_name(tmp_path: Path) -> None:
    ns = 1_795_802_400_123_456_789  # 2026-11-27T...
    assert _files.stamp(ns) == time.strftime("%Y%m%dT%H%M%S", time.gmtime(ns // 10**9)) + ".123456Z"
    live = tmp_path / "kerno-audit.jsonl"
    first = _files.rotated_name(live, ns)
    (tmp_path / first).write_bytes(b"")
    second = _files.rotated_name(live, ns)
    assert first != second and second > first
    assert [p.name for p in _files.rotated_files(live)] == [first]


def test_repair_sets_aside_torn_tail(tmp_path: Path) -> None:
    live = tmp_path / "kerno-audit.jsonl"
    whole = b'{"seq":0,"prev":"x"}\n{"seq":1,"prev":"y"}\n'
    live.write_bytes(whole + b'{"seq":2,"pr')
    point = _stream.repair_and_resume(live, 1_000_000_000)
    assert live.read_bytes() == whole
    assert point.last_seq == 1
    assert point.last_hash == line_hash(b'{"seq":1,"prev":"y"}')
    assert point.torn is not None
    assert point.torn.bytes == len(b'{"seq":2,"pr')
    assert point.torn.digest == "sha256:" + hashlib.sha256(b'{"seq":2,"pr').hexdigest()
    assert point.torn.set_aside.read_bytes() == b'{"seq":2,"pr'
    assert stat.S_IMODE(point.torn.set_aside.stat().st_mode) == 0o600


def test_repair_long_lines_read_backwards(tmp_path: Path) -> None:
    live = tmp_path / "kerno-audit.jsonl"
    big = b'{"seq":7,"pad":"' + b"x" * 200_000 + b'"}'
    live.write_bytes(b'{"seq":6}\n' + big + b"\n" + b"y" * 100_000)
    point = _stream.repair_and_resume(live, 0)
    assert point.last_seq == 7
    assert point.last_hash == line_hash(big)
    assert point.torn is not None and point.torn.bytes == 100_000


def test_resume_from_rotated_when_live_missing(tmp_path: Path) -> None:
    live = tmp_path / "kerno-audit.jsonl"
    rotated = tmp_path / "kerno-audit-20261127T180000.000001Z.jsonl.gz"
    rotated.write_bytes(gzip.compress(b'{"seq":0}\n{"seq":1}\n'))
    point = _stream.repair_and_resume(live, 0)
    assert (point.last_seq, point.last_hash, point.torn) == (1, line_hash(b'{"seq":1}'), None)


def test_resume_refuses_a_last_line_that_is_not_a_record(tmp_path: Path) -> None:
    live = tmp_path / "kerno-audit.jsonl"
    live.write_bytes(b"hello\n")
    with pytest.raises(_files.AuditFileError) as info:
        _stream.repair_and_resume(live, 0)
    assert str(info.value).startswith(f"{live}: the last whole line is not an audit record")


def test_compress_is_atomic_and_finish_settles_leftovers(tmp_path: Path) -> None:
    live = tmp_path / "kerno-audit.jsonl"
    rotated = tmp_path / "kerno-audit-20261127T180000.000001Z.jsonl"
    rotated.write_bytes(b'{"seq":0}\n')
    target = _files.compress(rotated)
    assert not rotated.exists()
    assert gzip.decompress(target.read_bytes()) == b'{"seq":0}\n'
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    # A crash after the rename but before the unlink leaves both: the .gz wins.
    rotated.write_bytes(b'{"seq":0}\n')
    (tmp_path / "kerno-audit-20261127T180001.000001Z.jsonl.gz.tmp").write_bytes(b"partial")
    other = tmp_path / "kerno-audit-20261127T180002.000001Z.jsonl"
    other.write_bytes(b'{"seq":1}\n')
    assert _files.finish_compressions(live) == [other]
    assert not rotated.exists()
    assert not (tmp_path / "kerno-audit-20261127T180001.000001Z.jsonl.gz.tmp").exists()


def test_retention_keeps_all_by_default_and_trims_when_asked(tmp_path: Path) -> None:
    live = tmp_path / "kerno-audit.jsonl"
    names = [f"kerno-audit-20261127T18000{i}.000001Z.jsonl" for i in range(5)]
    for name in names:
        (tmp_path / name).write_bytes(b"")
    assert _files.apply_retention(live, 0, 0, time.time()) == []
    deleted = _files.apply_retention(live, 2, 0, time.time())
    assert [p.name for p in deleted] == names[:3]
    assert [p.name for p in _files.rotated_files(live)] == names[3:]
    old = tmp_path / names[3]
    os.utime(old, (time.time() - 3 * 86400, time.time() - 3 * 86400))
    assert [p.name for p in _files.apply_retention(live, 0, 2, time.time())] == [names[3]]


# --- audit.file_group (issue 13, item 5) --------------------------------------------------------

needs_root = pytest.mark.skipif(
    os.geteuid() != 0, reason="giving files to a group we are not in needs root"
)


def _mode_and_gid(path: Path) -> tuple[int, int]:
    info = os.lstat(path)
    return stat.S_IMODE(info.st_mode), info.st_gid


@needs_root
def test_file_group_makes_the_log_readable_by_that_group(tmp_path: Path) -> None:
    from kerno_otel import AuditConfig, AuditLog

    gid = _files.group_id("daemon")
    live = tmp_path / "kerno" / "kerno-audit.jsonl"
    config = AuditConfig(file_path=str(live), file_group="daemon", max_size_mb=0.002, compress=True)
    with AuditLog(config) as log:
        for i in range(40):
            log.emit("bpf.load", details={"program": f"p{i}", "attach": ["t"], "success": True})
    rotated = _files.rotated_files(live)
    assert rotated and all(p.name.endswith(".gz") for p in rotated)
    assert _mode_and_gid(live.parent) == (0o750, gid)
    for path in [live, *rotated]:
        assert _mode_and_gid(path) == (0o640, gid), path.name


def test_without_file_group_the_log_stays_private(tmp_path: Path) -> None:
    from kerno_otel import AuditConfig, AuditLog

    live = tmp_path / "kerno" / "kerno-audit.jsonl"
    with AuditLog(AuditConfig(file_path=str(live))) as log:
        log.emit("bpf.load", details={"program": "p", "attach": ["t"], "success": True})
    assert _mode_and_gid(live.parent)[0] == 0o700
    assert _mode_and_gid(live)[0] == 0o600


@needs_root
def test_file_group_leaves_a_shared_parent_alone(tmp_path: Path) -> None:
    shared = tmp_path / "log"
    shared.mkdir(mode=0o755)
    os.chmod(shared, 0o755)
    before = _mode_and_gid(shared)
    _files.ensure_directory(shared, _files.group_id("daemon"))
    assert _mode_and_gid(shared) == before


def test_an_unknown_file_group_is_a_config_error(tmp_path: Path) -> None:
    from kerno_otel import ConfigError, load_config

    config = tmp_path / "kerno.yaml"
    config.write_text("audit:\n  file_group: no-such-group-here\n")
    with pytest.raises(ConfigError) as info:
        load_config(config, env={})
    assert str(info.value) == f"{config}:2: audit.file_group: no such group 'no-such-group-here'"
