"""``audit verify`` over a directory holding two streams, and verify on both cores.

Two streams side by side are each verified on their own, with their own checkpoints
(issue 13, item 8: they used to come out as "modified" lines). The parallel path
(files checked in worker processes, joints in the parent) gives the same report as
the one-process path, for an intact log and for damage at a file's first line.
"""

from __future__ import annotations

import gzip
import io
import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner
from helpers import stream_lines

from kerno_otel.audit.files import rotated_files
from kerno_otel.audit.keys import KeyPair, generate
from kerno_otel.audit.log import AuditLog
from kerno_otel.cli.app import main
from kerno_otel.config import AuditConfig, CheckpointConfig
from kerno_otel.verify.verify import VerifyError, verify, verify_streams


def plugin_load(i: int) -> dict[str, object]:
    return {"plugin": f"p{i}", "distribution": "d", "version": "1", "hooks": ["register_sinks"]}


def write_stream(directory: Path, name: str, keys: KeyPair, records: int) -> None:
    cfg = AuditConfig(
        file_path=str(directory / name),
        max_size_mb=0.01,
        compress=True,
        checkpoint=CheckpointConfig(key_file=str(keys.private_path), every_records=20),
    )
    with AuditLog(cfg, stderr=io.StringIO()) as log:
        for i in range(records):
            log.emit("plugin.load", details=plugin_load(i))


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> KeyPair:
    return generate(tmp_path_factory.mktemp("keys"))


@pytest.fixture(scope="module")
def two(tmp_path_factory: pytest.TempPathFactory, keys: KeyPair) -> Path:
    directory = tmp_path_factory.mktemp("two") / "log"
    write_stream(directory, "alpha.jsonl", keys, 90)
    write_stream(directory, "beta.jsonl", keys, 60)
    assert len(rotated_files(directory / "alpha.jsonl")) >= 2
    assert len(rotated_files(directory / "beta.jsonl")) >= 2
    return directory


def stream_id(live: Path) -> str:
    return str(json.loads(stream_lines(live)[-1])["details"]["stream"])


def test_two_streams_are_verified_each_on_its_own(two: Path, keys: KeyPair) -> None:
    result = CliRunner().invoke(
        main, ["audit", "verify", str(two), "--key", str(keys.public_path), "--silent"]
    )
    assert (result.exit_code, result.stdout) == (0, "")
    alpha, beta = (len(stream_lines(two / name)) for name in ("alpha.jsonl", "beta.jsonl"))
    lines = result.stderr.splitlines()
    assert lines[0] == "2 streams found (each verified on its own, with its own checkpoints)"
    reports = verify_streams([two], public_key=None)
    by_id = {r.stream: r for r in reports}
    assert set(by_id) == {stream_id(two / "alpha.jsonl"), stream_id(two / "beta.jsonl")}
    assert sorted(r.records for r in reports) == sorted([alpha, beta])
    for report in reports:
        assert report.intact
        live = Path(report.files[-1])
        assert report.files == [str(p) for p in [*rotated_files(live), live]]
    json_result = CliRunner().invoke(
        main, ["audit", "verify", str(two), "--key", str(keys.public_path), "--json", "--silent"]
    )
    document = json.loads(json_result.stdout)
    assert document["intact"] is True
    assert len(document["streams"]) == 2
    assert document["records"] == alpha + beta
    assert all(s["checkpoints_checked"] > 0 for s in document["streams"])
    assert {s["checkpoints_file"] for s in document["streams"]} == {
        str(two / "alpha.jsonl.checkpoints"), str(two / "beta.jsonl.checkpoints"),
    }  # fmt: skip


def test_damage_in_one_stream_is_named_in_that_stream_only(
    two: Path, keys: KeyPair, tmp_path: Path
) -> None:
    copy = tmp_path / "log"
    shutil.copytree(two, copy)
    beta = copy / "beta.jsonl"
    lines = beta.read_bytes().splitlines(keepends=True)
    lines[2] = lines[2].replace(b'"p', b'"q', 1)
    beta.write_bytes(b"".join(lines))
    result = CliRunner().invoke(
        main, ["audit", "verify", str(copy), "--key", str(keys.public_path), "--silent"]
    )
    assert result.exit_code == 1
    (problem,) = result.stdout.splitlines()
    assert problem.startswith(f"{beta}:3: seq ") and ": modified: " in problem
    stderr = result.stderr.splitlines()
    assert sum(line.endswith(": intact") for line in stderr) == 1
    assert sum(line.endswith(": 1 problem") for line in stderr) == 1


def test_verify_of_one_stream_api_refuses_two(two: Path) -> None:
    with pytest.raises(VerifyError, match="2 streams found"):
        verify([two])


@pytest.fixture(scope="module")
def one(tmp_path_factory: pytest.TempPathFactory, keys: KeyPair) -> Path:
    directory = tmp_path_factory.mktemp("one") / "log"
    write_stream(directory, "kerno-audit.jsonl", keys, 200)
    assert len(rotated_files(directory / "kerno-audit.jsonl")) >= 4
    return directory


def test_parallel_and_serial_reports_agree_on_an_intact_log(one: Path, keys: KeyPair) -> None:
    from kerno_otel.audit.keys import load_public

    public = load_public(keys.public_path)
    serial = verify([one], public_key=public, workers=1)
    parallel = verify([one], public_key=public, workers=2)
    assert serial.intact and serial.checkpoints_checked > 0
    assert parallel.to_json() == serial.to_json()


@pytest.mark.parametrize("line", [0, 1, -1])
def test_parallel_and_serial_reports_agree_on_damage_at_file_joints(
    one: Path, keys: KeyPair, tmp_path: Path, line: int
) -> None:
    """A file's first and last lines are where the workers' pieces meet."""
    import gzip

    from kerno_otel.audit.keys import load_public

    copy = tmp_path / "log"
    shutil.copytree(one, copy)
    second = rotated_files(copy / "kerno-audit.jsonl")[1]
    data = gzip.decompress(second.read_bytes()).splitlines(keepends=True)
    data[line] = data[line].replace(b'"p', b'"x', 1)
    second.write_bytes(gzip.compress(b"".join(data)))
    public = load_public(keys.public_path)
    serial = verify([copy], public_key=public, workers=1)
    parallel = verify([copy], public_key=public, workers=2)
    assert not serial.intact
    assert parallel.to_json() == serial.to_json()


def test_parallel_verify_under_a_live_thread_runs_cleanly(
    one: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    """The CLI's progress bar is a thread: the workers must still start (no re-run of
    the __main__ module, no tracebacks) and do the work."""
    import threading

    from kerno_otel.verify.parallel import Summaries

    stop = threading.Event()
    thread = threading.Thread(target=stop.wait)
    thread.start()
    try:
        with Summaries(2, 1) as summaries:
            files = [*rotated_files(one / "kerno-audit.jsonl"), one / "kerno-audit.jsonl"]
            results = [pending() for pending in summaries.submit(files, set())]
        assert all(r is not None for r in results)
        assert verify([one], workers=2).intact
    finally:
        stop.set()
        thread.join()
    assert capfd.readouterr().err == ""


@pytest.mark.parametrize("damage", [None, 5, 40, -1])
def test_big_files_cut_into_pieces_give_the_serial_report(
    keys: KeyPair, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, damage: int | None
) -> None:
    """Plain files are summarized in pieces (here: a few KB each); the joints between
    pieces are checked like the joints between files."""
    from kerno_otel.audit.keys import load_public
    from kerno_otel.verify import parallel

    directory = tmp_path / "log"
    cfg = AuditConfig(
        file_path=str(directory / "kerno-audit.jsonl"),
        max_size_mb=0.05,
        checkpoint=CheckpointConfig(key_file=str(keys.private_path), every_records=15),
    )
    with AuditLog(cfg, stderr=io.StringIO()) as log:
        for i in range(300):
            log.emit("plugin.load", details=plugin_load(i))
    monkeypatch.setattr(parallel, "CHUNK_BYTES", 4096)
    files = [*rotated_files(directory / "kerno-audit.jsonl"), directory / "kerno-audit.jsonl"]
    assert len(parallel._pieces(files[0]) or []) >= 5
    if damage is None:
        from kerno_otel.verify.walk import summarize

        with parallel.Summaries(2, 1) as summaries:
            joined = summaries.submit(files, {20, 150})[0]()
        assert joined is not None
        assert joined == summarize(files[0].read_bytes(), {20, 150})
    else:
        lines = files[0].read_bytes().splitlines(keepends=True)
        lines[damage] = lines[damage].replace(b'"p', b'"z', 1)
        files[0].write_bytes(b"".join(lines))
    public = load_public(keys.public_path)
    serial = verify([directory], public_key=public, workers=1)
    parallel_report = verify([directory], public_key=public, workers=2)
    assert serial.intact is (damage is None)
    assert parallel_report.to_json() == serial.to_json()


def test_a_directory_after_logrotate_renamed_the_live_file_is_read_whole(
    tmp_path: Path, keys: KeyPair
) -> None:
    """logrotate (no copytruncate) renamed the live file after the daemon stopped:
    ``kerno-audit.jsonl.1``. A directory stands for it too; it was passed over, and
    verify said the chain's last file was missing."""
    directory = tmp_path / "log"
    live = directory / "kerno-audit.jsonl"
    write_stream(directory, live.name, keys, 40)
    files = [*rotated_files(live), live]
    assert len(files) >= 2
    want = stream_lines(live)  # the whole stream, in chain order
    live.rename(directory / "kerno-audit.jsonl.1")
    runner = CliRunner()
    verified = runner.invoke(
        main, ["audit", "verify", str(directory), "--key", str(keys.public_path)]
    )
    assert verified.exit_code == 0, verified.output
    assert f"verified {len(want)} records in {len(files)} files" in verified.stderr
    queried = runner.invoke(main, ["audit", "query", str(directory), "--nl"])
    assert queried.exit_code == 0, queried.output
    assert queried.stdout_bytes.splitlines() == want
    validated = runner.invoke(main, ["audit", "validate", str(directory), "--json"])
    assert json.loads(validated.stdout)["lines"] == len(want)


def test_a_foreign_file_in_the_directory_is_one_problem_not_a_cascade(
    two: Path, keys: KeyPair, tmp_path: Path
) -> None:
    """A file that is no record at all (notes someone left) sorted first, and every
    record of the stream after it was reported "modified: its seq was changed"."""
    copy = tmp_path / "log"
    shutil.copytree(two, copy)
    (copy / "0-notes.jsonl").write_bytes(b"remember to rotate\n")
    result = CliRunner().invoke(
        main, ["audit", "verify", str(copy), "--key", str(keys.public_path), "--silent"]
    )
    assert result.exit_code == 1
    (problem,) = result.stdout.splitlines()
    assert problem.startswith(f"{copy / '0-notes.jsonl'}:1: seq ?: modified: ")
    assert sum(line.endswith(": intact") for line in result.stderr.splitlines()) == 1


def test_a_symlink_in_the_directory_is_not_followed(
    two: Path, keys: KeyPair, tmp_path: Path
) -> None:
    """Nothing outside the log is read, or packed into a bundle, through a link."""
    copy = tmp_path / "log"
    shutil.copytree(two, copy)
    outside = tmp_path / "secret.txt"
    outside.write_bytes(b"not for the reviewer\n")
    (copy / "zz.jsonl").symlink_to(outside)
    runner = CliRunner()
    verified = runner.invoke(
        main, ["audit", "verify", str(copy), "--key", str(keys.public_path), "--silent"]
    )
    assert (verified.exit_code, verified.stdout) == (0, "")
    queried = runner.invoke(main, ["audit", "query", str(copy), "--nl", "--silent"])
    assert queried.exit_code == 0 and b"reviewer" not in queried.stdout_bytes
    assert "zz.jsonl" not in queried.stderr
    out = tmp_path / "b.tar.gz"
    bundled = runner.invoke(
        main, ["audit", "bundle", str(copy), "--key", str(keys.public_path), "-o", str(out)]
    )
    assert bundled.exit_code == 0, bundled.output
    assert b"not for the reviewer" not in gzip.decompress(out.read_bytes())


def test_two_directories_with_the_same_file_names_are_both_read(
    keys: KeyPair, tmp_path: Path
) -> None:
    """Two hosts' logs, each kerno-audit.jsonl and its rotated files: files were matched
    by name alone, so one directory's files silently replaced the other's."""
    first, second = tmp_path / "host1", tmp_path / "host2"
    write_stream(first, "kerno-audit.jsonl", keys, 30)
    write_stream(second, "kerno-audit.jsonl", keys, 50)
    lives = (first / "kerno-audit.jsonl", second / "kerno-audit.jsonl")
    lines = [line for live in lives for line in stream_lines(live)]
    files = [f for live in lives for f in [*rotated_files(live), live]]
    runner = CliRunner()
    verified = runner.invoke(
        main, ["audit", "verify", str(first), str(second), "--key", str(keys.public_path)]
    )
    assert (verified.exit_code, verified.stdout) == (0, ""), verified.output
    assert verified.stderr.splitlines()[0].startswith("2 streams found")
    queried = runner.invoke(main, ["audit", "query", str(first), str(second), "--nl"])
    assert sorted(queried.stdout_bytes.splitlines()) == sorted(lines)
    assert queried.stderr == f"matched {len(lines)} of {len(lines)} records in {len(files)} files\n"
    out = tmp_path / "b.tar.gz"
    bundled = runner.invoke(
        main, ["audit", "bundle", str(first), str(second), "--key", str(keys.public_path),
               "-o", str(out)],
    )  # fmt: skip
    assert bundled.exit_code == 2
    assert "come from different directories; bundle one log at a time" in bundled.stderr
