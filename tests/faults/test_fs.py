"""File-system faults under a running writer: the live file deleted, renamed (logrotate
without copytruncate), replaced by a symlink, its directory removed, and a hard-linked
alias. Each is noticed, said on stderr and in the counters, recorded in-band, and never
followed through a symlink; ``verify`` then tells what happened."""

from __future__ import annotations

import gzip
import io
import os
import shutil
from pathlib import Path

import orjson
import pytest
from helpers import wait_until

from kerno_otel.audit.files import AuditFileError
from kerno_otel.audit.log import AuditLog
from kerno_otel.config import AuditConfig
from kerno_otel.verify.verify import verify

PIPELINES = ["process", "thread"]


def plugin_load(name: str) -> dict[str, object]:
    return {"plugin": name, "distribution": "kerno-otel", "version": "0.1.0", "hooks": []}


def records_of(path: Path) -> list[dict[str, object]]:
    data = path.read_bytes()
    if path.name.endswith(".gz"):
        data = gzip.decompress(data)
    assert data == b"" or data.endswith(b"\n"), f"{path.name}: torn last line"
    return [orjson.loads(line) for line in data.splitlines()]


def plugins_in(records: list[dict[str, object]]) -> list[str]:
    return [r["details"]["plugin"] for r in records if r["type"] == "plugin.load"]


def rotates(records: list[dict[str, object]]) -> list[dict[str, object]]:
    return [r["details"] for r in records if r["type"] == "audit.rotate"]


@pytest.mark.parametrize("pipeline", PIPELINES)
def test_a_deleted_live_file_is_noticed_restored_and_recorded(
    tmp_path: Path, pipeline: str
) -> None:
    """Issue 11 item 3: records used to go on into the unlinked inode, flush() True,
    nothing said. Now: an alarm, a counter, the deleted file's records copied back from
    the descriptor the writer still holds (those written after the deletion too), a new
    live file opening with ``audit.rotate`` (reason ``removed``, ``restored``) and a
    chain that verifies whole: deleting the live file destroys nothing."""
    live = tmp_path / "log" / "kerno-audit.jsonl"
    err = io.StringIO()
    log = AuditLog(AuditConfig(file_path=str(live), pipeline=pipeline), stderr=err)
    for i in range(5):
        log.emit("plugin.load", details=plugin_load(f"before{i}"))
    assert log.flush(timeout=30)
    live.unlink()
    for i in range(3):  # into the unlinked inode, before anyone looks
        log.emit("plugin.load", details=plugin_load(f"unlinked{i}"))
    assert log.flush(timeout=30)  # a flush looks at the file first
    for i in range(5):
        log.emit("plugin.load", details=plugin_load(f"after{i}"))
    assert log.flush(timeout=30)
    stats = log.stats()
    log.close()
    assert live.exists(), "no new live file was opened"
    records = records_of(live)
    assert records[0]["type"] == "audit.rotate"
    link = rotates(records)[0]
    assert link["reason"] == "removed" and link["restored"] is True
    restored = live.parent / link["old_file"]
    assert restored.name.startswith("kerno-audit-") and restored.is_file()
    assert oct(restored.stat().st_mode & 0o777) == oct(0o600)
    kept = records_of(restored)
    assert plugins_in(kept) == [f"before{i}" for i in range(5)] + [f"unlinked{i}" for i in range(3)]
    assert link["last_seq"] == kept[-1]["seq"] == records[0]["seq"] - 1
    assert plugins_in(records) == [f"after{i}" for i in range(5)]
    assert "was removed" in err.getvalue()
    assert f"copied back from the open file to {restored.name}" in err.getvalue()
    assert stats["file_faults"] == {"removed": 1}
    report = verify([live.parent])
    assert report.intact, report.problems
    assert report.first_seq == 0 and report.records == len(kept) + len(records)


@pytest.mark.parametrize("pipeline", PIPELINES)
def test_an_external_rename_is_followed_and_verify_chains_through_it(
    tmp_path: Path, pipeline: str
) -> None:
    """Issue 11 item 5 (running): ``mv kerno-audit.jsonl kerno-audit.jsonl.1`` (logrotate
    without copytruncate, ``create``) used to leave the writer in ``.1`` silently."""
    live = tmp_path / "log" / "kerno-audit.jsonl"
    moved = live.with_name(live.name + ".1")
    err = io.StringIO()
    log = AuditLog(AuditConfig(file_path=str(live), pipeline=pipeline), stderr=err)
    log.emit("plugin.load", details=plugin_load("before"))
    assert log.flush(timeout=30)
    live.rename(moved)
    live.touch(mode=0o644)  # logrotate's "create"
    assert log.flush(timeout=30)
    log.emit("plugin.load", details=plugin_load("after"))
    assert log.flush(timeout=30)
    stats = log.stats()
    log.close()
    old, new = records_of(moved), records_of(live)
    assert plugins_in(old) == ["before"] and plugins_in(new) == ["after"]
    link = rotates(new)[0]
    assert new[0]["type"] == "audit.rotate"
    assert (link["reason"], link["old_file"]) == ("renamed", moved.name)
    assert link["last_seq"] == old[-1]["seq"]
    assert stats["file_faults"] == {"renamed": 1}
    assert "was renamed" in err.getvalue()
    assert oct(live.stat().st_mode & 0o777) == oct(0o600)
    report = verify([live.parent])
    assert report.intact, report.problems
    assert report.records == len(old) + len(new)


@pytest.mark.parametrize("create", [False, True], ids=["no-create", "create"])
def test_a_restart_after_an_external_rename_continues_the_stream(
    tmp_path: Path, create: bool
) -> None:
    """Issue 11 item 5 (restart): the live file renamed while the daemon was down used to
    start a new seq-0 stream, and ``verify DIR`` said intact over the fork."""
    live = tmp_path / "log" / "kerno-audit.jsonl"
    moved = live.with_name(live.name + ".1")
    config = AuditConfig(file_path=str(live), pipeline="thread")
    with AuditLog(config, stderr=io.StringIO()) as log:
        log.emit("plugin.load", details=plugin_load("first-run"))
    live.rename(moved)
    if create:
        live.touch(mode=0o600)
    with AuditLog(config, stderr=io.StringIO()) as log:
        log.emit("plugin.load", details=plugin_load("second-run"))
    old, new = records_of(moved), records_of(live)
    assert new[0]["type"] == "audit.rotate"
    assert new[0]["seq"] == old[-1]["seq"] + 1
    assert (rotates(new)[0]["reason"], rotates(new)[0]["old_file"]) == ("renamed", moved.name)
    start = next(r for r in new if r["type"] == "audit.start")["details"]
    assert start["resumed"] is True and start["last_seq"] == old[-1]["seq"]
    report = verify([live.parent])
    assert report.intact, report.problems
    assert report.first_seq == 0 and report.records == len(old) + len(new)


def test_a_live_file_deleted_while_the_writer_was_down_is_recorded_as_missing(
    tmp_path: Path,
) -> None:
    """``rm kerno-audit.jsonl`` while the daemon is stopped: nothing holds the file, so its
    records are gone. The next start used to resume from the newest rotated file, reuse
    the deleted file's seqs and leave verify intact. Now the new live file opens with
    ``audit.rotate`` reason ``removed`` naming itself, and verify reports the gap."""
    live = tmp_path / "log" / "kerno-audit.jsonl"
    config = AuditConfig(file_path=str(live), max_size_mb=0.004, pipeline="thread")
    with AuditLog(config, stderr=io.StringIO()) as log:
        for i in range(30):  # several rotations, then some records in the live file
            log.emit("plugin.load", details=plugin_load(f"first-run{i}"))
    lost = records_of(live)
    assert lost and not [p for p in live.parent.iterdir() if p.name.endswith(".part")]
    live.unlink()
    err = io.StringIO()
    with AuditLog(config, stderr=err) as log:
        stats = log.stats()
        log.emit("plugin.load", details=plugin_load("second-run"))
    new = records_of(live)
    link = rotates(new)[0]
    assert new[0]["type"] == "audit.rotate" and new[0]["severity"] == "WARN"
    assert (link["reason"], link["old_file"]) == ("removed", live.name)
    assert "restored" not in link
    assert link["last_seq"] < lost[0]["seq"]  # where the rotated files end
    assert "was removed while the writer was down" in err.getvalue()
    assert stats["file_faults"] == {"removed": 1}
    report = verify([live.parent])
    assert [p.kind for p in report.problems] == ["file-missing"], report.problems


def test_an_empty_directory_or_a_first_start_is_not_a_missing_file(tmp_path: Path) -> None:
    """No rotated files, no live file: a new stream, nothing said."""
    live = tmp_path / "log" / "kerno-audit.jsonl"
    err = io.StringIO()
    with AuditLog(AuditConfig(file_path=str(live), pipeline="thread"), stderr=err) as log:
        log.emit("plugin.load", details=plugin_load("only"))
    assert records_of(live)[0]["type"] == "audit.start"
    assert "removed" not in err.getvalue()
    assert verify([live.parent]).intact


def test_a_restart_never_forks_a_renamed_stream_unnoticed(tmp_path: Path) -> None:
    """Whatever name the renamed file has, a second seq-0 stream beside it is not what
    a restart makes: verify over the directory is never intact over two streams."""
    live = tmp_path / "log" / "kerno-audit.jsonl"
    config = AuditConfig(file_path=str(live), pipeline="thread")
    with AuditLog(config, stderr=io.StringIO()) as log:
        log.emit("plugin.load", details=plugin_load("first-run"))
    live.rename(live.with_name("kerno-audit.jsonl-20261129"))  # logrotate dateext
    with AuditLog(config, stderr=io.StringIO()) as log:
        log.emit("plugin.load", details=plugin_load("second-run"))
    seqs = [r["seq"] for r in records_of(live)]
    assert seqs[0] != 0
    assert verify([live.parent]).intact


@pytest.mark.parametrize("pipeline", PIPELINES)
def test_a_symlink_at_the_live_path_is_set_aside_never_followed(
    tmp_path: Path, pipeline: str
) -> None:
    secret = tmp_path / "passwd-copy"
    secret.write_text("root:x:0:0:SECRET-CONTENT:/root:/bin/sh\n")
    live = tmp_path / "log" / "kerno-audit.jsonl"
    err = io.StringIO()
    config = AuditConfig(file_path=str(live), max_size_mb=0.004, compress=True, pipeline=pipeline)
    with AuditLog(config, stderr=err) as log:
        log.emit("plugin.load", details=plugin_load("before"))
        assert log.flush(timeout=30)
        live.unlink()
        live.symlink_to(secret)
        assert log.flush(timeout=30)
        for i in range(40):  # several rotations' worth
            log.emit("plugin.load", details=plugin_load(f"after{i}"))
        assert log.flush(timeout=30)
    assert secret.read_text() == "root:x:0:0:SECRET-CONTENT:/root:/bin/sh\n"
    assert not live.is_symlink() and live.is_file()
    aside = [p for p in live.parent.iterdir() if p.is_symlink()]
    assert len(aside) == 1 and aside[0].name.startswith(live.name + ".displaced-")
    everything = b""
    for path in live.parent.iterdir():
        if path.is_symlink():
            continue
        data = path.read_bytes()
        everything += gzip.decompress(data) if path.name.endswith(".gz") else data
    assert b"SECRET-CONTENT" not in everything
    removed = [r for r in map(orjson.loads, everything.splitlines()) if r["type"] == "audit.rotate"]
    assert any(r["details"].get("set_aside") == aside[0].name for r in removed)
    assert "a symbolic link at its path was set aside" in err.getvalue()


@pytest.mark.parametrize("pipeline", PIPELINES)
def test_a_directory_removed_under_the_writer_is_made_again(tmp_path: Path, pipeline: str) -> None:
    """The rotated files go with the directory (verify: ``file-missing``); the live file's
    records are copied back into the directory made again, and everything after is there."""
    directory = tmp_path / "log"
    live = directory / "kerno-audit.jsonl"
    err = io.StringIO()
    config = AuditConfig(file_path=str(live), max_size_mb=0.004, pipeline=pipeline)
    log = AuditLog(config, stderr=err)
    names = [f"before{i}" for i in range(30)] + [f"after{i}" for i in range(40)]
    for name in names[:30]:  # several rotations: those files are lost with the directory
        log.emit("plugin.load", details=plugin_load(name))
    assert log.flush(timeout=30)
    shutil.rmtree(directory)
    for name in names[30:]:
        log.emit("plugin.load", details=plugin_load(name))
    assert log.flush(timeout=30)
    log.close()
    assert directory.is_dir() and oct(directory.stat().st_mode & 0o777) == oct(0o700)
    report = verify([directory])
    assert [p.kind for p in report.problems] == ["file-missing"], report.problems
    in_order = [r for name in report.files for r in records_of(Path(name))]
    kept = plugins_in(in_order)
    # the live file's records at the removal survive, and all after it: one unbroken run
    assert kept == names[len(names) - len(kept) :]
    assert kept[0].startswith("before"), "the removed live file's records were not kept"
    assert any(r["type"] == "audit.rotate" and r["details"].get("restored") for r in in_order)
    assert "was removed" in err.getvalue()


def test_a_hard_linked_alias_cannot_fork_the_chain(tmp_path: Path) -> None:
    """Issue 11 item 18: a second writer given another name for the live file (a hard
    link) took another lock file and appended to the same inode: two chains in one file."""
    live = tmp_path / "log" / "kerno-audit.jsonl"
    alias = tmp_path / "log" / "alias.jsonl"
    err = io.StringIO()
    with AuditLog(AuditConfig(file_path=str(live), pipeline="thread"), stderr=err) as first:
        first.emit("plugin.load", details=plugin_load("first"))
        assert first.flush(timeout=30)
        os.link(live, alias)
        with pytest.raises(AuditFileError, match="hard link"):
            AuditLog(AuditConfig(file_path=str(alias), pipeline="thread"), stderr=io.StringIO())
        assert wait_until(lambda: first.stats()["file_faults"].get("hard_link") == 1, 10)
        first.emit("plugin.load", details=plugin_load("second"))
    assert "hard link" in err.getvalue()
    assert plugins_in(records_of(live)) == ["first", "second"]
    assert verify([live]).intact


def test_a_directory_that_cannot_be_made_again_is_retried_with_one_alarm(tmp_path: Path) -> None:
    """The directory removed and a file put at its path: no new live file can be opened.
    The writer says so once (not at every retry), writes on into what it has, and opens
    the new file as soon as the path is free again."""
    directory = tmp_path / "log"
    live = directory / "kerno-audit.jsonl"
    err = io.StringIO()
    log = AuditLog(AuditConfig(file_path=str(live), pipeline="thread"), stderr=err)
    log.emit("plugin.load", details=plugin_load("before"))
    assert log.flush(timeout=30)
    shutil.rmtree(directory)
    directory.write_text("not a directory\n")
    for i in range(3):
        log.emit("plugin.load", details=plugin_load(f"blocked{i}"))
        assert log.flush(timeout=30)  # each flush looks again
    assert err.getvalue().count("no new live file can be opened") == 1
    assert log.stats()["file_faults"] == {"removed": 1}
    directory.unlink()
    assert log.flush(timeout=30)
    log.emit("plugin.load", details=plugin_load("after"))
    log.close()
    records = records_of(live)
    assert records[0]["type"] == "audit.rotate" and records[0]["details"]["reason"] == "removed"
    assert plugins_in(records) == ["after"]
    assert "was removed by someone else" in err.getvalue()
    # what went on into the old file while no new one could be opened was copied back
    restored = records_of(directory / records[0]["details"]["old_file"])
    assert plugins_in(restored) == ["before", "blocked0", "blocked1", "blocked2"]
    assert verify([directory]).intact


NOT_ROOT = "a file owned by another user needs root to make (chown)"


@pytest.mark.skipif(os.geteuid() != 0, reason=NOT_ROOT)
@pytest.mark.parametrize("pipeline", PIPELINES)
def test_a_live_file_another_user_owns_is_refused_at_open(tmp_path: Path, pipeline: str) -> None:
    """A file another user made at the live path (a sticky /tmp, a shared directory) used
    to be adopted and tightened to 0600 -- still owned by them, so they could chmod it
    back and rewrite the log."""
    live = tmp_path / "kerno-audit.jsonl"
    live.touch(mode=0o666)
    os.chown(live, 65534, 65534)
    with pytest.raises(AuditFileError, match="owned by uid 65534, not by this writer"):
        AuditLog(AuditConfig(file_path=str(live), pipeline=pipeline))
    assert live.read_bytes() == b""


@pytest.mark.skipif(os.geteuid() != 0, reason=NOT_ROOT)
@pytest.mark.parametrize("pipeline", PIPELINES)
def test_an_empty_file_another_user_creates_after_a_rename_is_set_aside(
    tmp_path: Path, pipeline: str
) -> None:
    """logrotate's ``create`` is taken over only when the writer's user owns the new file;
    one someone else made is set aside unread, like a symlink."""
    live = tmp_path / "log" / "kerno-audit.jsonl"
    moved = live.with_name(live.name + ".1")
    err = io.StringIO()
    log = AuditLog(AuditConfig(file_path=str(live), pipeline=pipeline), stderr=err)
    log.emit("plugin.load", details=plugin_load("before"))
    assert log.flush(timeout=30)
    live.rename(moved)
    live.touch(mode=0o666)
    os.chown(live, 65534, 65534)
    assert log.flush(timeout=30)
    log.emit("plugin.load", details=plugin_load("after"))
    assert log.flush(timeout=30)
    log.close()
    assert live.stat().st_uid == os.geteuid()
    new = records_of(live)
    link = rotates(new)[0]
    assert (link["reason"], link["old_file"]) == ("renamed", moved.name)
    aside = live.parent / str(link["set_aside"])
    assert aside.stat().st_uid == 65534 and aside.read_bytes() == b""
    assert plugins_in(new) == ["after"]
    assert verify([live.parent]).intact


@pytest.mark.parametrize("pipeline", PIPELINES)
def test_a_live_file_deleted_just_before_close_is_copied_back(
    tmp_path: Path, pipeline: str
) -> None:
    """``rm kerno-audit.jsonl`` and then a stop, before the writer's next look (512
    records, 0.5 s): close() used to seal and close the deleted file unlooked, losing
    every record in it; the next start then resumed from the file before it, reusing
    those seqs, and verify said intact. close() looks one last time and copies it back."""
    live = tmp_path / "log" / "kerno-audit.jsonl"
    config = AuditConfig(file_path=str(live), pipeline=pipeline)
    err = io.StringIO()
    log = AuditLog(config, stderr=err)
    for i in range(5):
        log.emit("plugin.load", details=plugin_load(f"before{i}"))
    assert log.flush(timeout=30)
    live.unlink()
    for i in range(3):
        log.emit("plugin.load", details=plugin_load(f"unlinked{i}"))
    log.close()
    assert "was removed" in err.getvalue()
    with AuditLog(config, stderr=io.StringIO()) as log:
        log.emit("plugin.load", details=plugin_load("next-run"))
    report = verify([live.parent])
    assert report.intact, report.problems
    in_order = [r for name in report.files for r in records_of(Path(name))]
    assert plugins_in(in_order) == (
        [f"before{i}" for i in range(5)] + [f"unlinked{i}" for i in range(3)] + ["next-run"]
    )
    assert [r["seq"] for r in in_order] == list(range(len(in_order)))
    assert any(r["type"] == "audit.rotate" and r["details"].get("restored") for r in in_order)


def test_a_link_planted_at_the_copys_name_is_never_followed_and_costs_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The copy's name is predictable (a time stamp). A dangling symlink planted there was
    taken for a free name (``exists()`` follows it): the copy's O_EXCL open then failed and
    the deleted file's records were given up. Now the name is passed over, the symlink is
    neither followed nor replaced, and the copy takes the next free name."""
    import types

    from kerno_otel.audit import file_life, files

    live = tmp_path / "log" / "kerno-audit.jsonl"
    target = tmp_path / "not-to-be-created"
    log = AuditLog(AuditConfig(file_path=str(live), pipeline="thread"), stderr=io.StringIO())
    log.emit("plugin.load", details=plugin_load("before"))
    assert log.flush(timeout=30)
    fixed = 1_800_000_000 * 10**9
    planted = live.parent / files.rotated_name(live, fixed)
    planted.symlink_to(target)
    clock = types.SimpleNamespace(time_ns=lambda: fixed, monotonic=file_life.time.monotonic)
    monkeypatch.setattr(file_life, "time", clock)
    live.unlink()
    assert log.flush(timeout=30)
    log.emit("plugin.load", details=plugin_load("after"))
    log.close()
    assert planted.is_symlink() and os.readlink(planted) == str(target)
    assert not target.exists()
    link = rotates(records_of(live))[0]
    assert link["restored"] is True and link["old_file"] != planted.name
    assert plugins_in(records_of(live.parent / link["old_file"])) == ["before"]
    report = verify([live.parent])
    assert report.intact, report.problems


def test_the_copy_back_appears_whole_or_not_at_all(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The copy used to be written in place, at its rotated name, a chunk at a time: the
    forwarder (which takes a rotated file as final) could read it half made and ship a
    torn line, then skip the rest. Now, at every chunk read for the copy, no file of the
    stream holds a part of it; it gets its name once whole."""
    live = tmp_path / "log" / "kerno-audit.jsonl"
    log = AuditLog(AuditConfig(file_path=str(live), pipeline="thread"), stderr=io.StringIO())
    pad = "x" * 1000
    while live.stat().st_size < 3 << 20:  # several 1 MiB chunks to copy
        for i in range(500):
            log.emit("plugin.load", details=plugin_load(f"p{i}") | {"version": pad[:60]})
        assert log.flush(timeout=30)
    size = live.stat().st_size
    live.unlink()
    seen: list[list[str]] = []
    pread = os.pread

    def spy(fd: int, n: int, offset: int) -> bytes:
        seen.append(sorted(p.name for p in live.parent.glob("kerno-audit-*.jsonl")))
        return pread(fd, n, offset)

    monkeypatch.setattr(os, "pread", spy)
    assert log.flush(timeout=30)  # looks, finds the file removed, copies it back
    monkeypatch.undo()
    log.close()
    assert len(seen) >= 3
    assert all(names == [] for names in seen), seen
    link = rotates(records_of(live))[0]
    assert link["restored"] is True
    assert (live.parent / link["old_file"]).stat().st_size == size
    assert not list(live.parent.glob("*.part"))
    assert verify([live.parent]).intact


@pytest.mark.skipif(os.geteuid() != 0, reason="audit.file_group needs root to give files a group")
@pytest.mark.parametrize("pipeline", PIPELINES)
def test_the_copy_back_is_shared_with_file_group_like_a_rotated_file(
    tmp_path: Path, pipeline: str
) -> None:
    """With ``audit.file_group`` the copy of a deleted live file is 0640 and that group,
    like every rotated file (and 0600 without it: the first test)."""
    from kerno_otel.audit import files

    gid = files.group_id("daemon")
    live = tmp_path / "log" / "kerno-audit.jsonl"
    config = AuditConfig(file_path=str(live), file_group="daemon", pipeline=pipeline)
    with AuditLog(config, stderr=io.StringIO()) as log:
        log.emit("plugin.load", details=plugin_load("before"))
        assert log.flush(timeout=30)
        live.unlink()
        assert log.flush(timeout=30)
        log.emit("plugin.load", details=plugin_load("after"))
    copy = live.parent / rotates(records_of(live))[0]["old_file"]
    info = copy.lstat()
    assert (oct(info.st_mode & 0o777), info.st_gid) == (oct(0o640), gid)
    assert plugins_in(records_of(copy)) == ["before"]
