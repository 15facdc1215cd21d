"""``audit verify``: a real log built through AuditLog (rotated, gzipped, signed), then damaged.

Each test damages a copy in one way and asserts the exact report: kind, file,
line and seq, and exit status 1; the undamaged log verifies with exit 0.
"""

from __future__ import annotations

import gzip
import io
import shutil
from pathlib import Path

import orjson
import pytest
from click.testing import CliRunner, Result
from helpers import CheckpointWatch

from kerno_otel.audit.chain import Chain, line_hash
from kerno_otel.audit.checkpoints import Signer, sidecar_path
from kerno_otel.audit.files import rotated_files
from kerno_otel.audit.keys import KeyPair, generate, load_private
from kerno_otel.audit.log import AuditLog
from kerno_otel.cli.app import main
from kerno_otel.config import AuditConfig, CheckpointConfig
from kerno_otel.verify.verify import verify

LIVE = "kerno-audit.jsonl"


def bpf_load(i: int) -> dict[str, object]:
    return {"program": f"prog{i:04d}", "attach": ["syscalls:sys_exit_openat"], "success": True}


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> KeyPair:
    return generate(tmp_path_factory.mktemp("keys"))


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory, keys: KeyPair) -> Path:
    """A closed stream: ~4 rotated .gz files and a live file, checkpoints every 25 records."""
    directory = tmp_path_factory.mktemp("built") / "log"
    cfg = AuditConfig(
        file_path=str(directory / LIVE),
        max_size_mb=0.02,
        compress=True,
        checkpoint=CheckpointConfig(
            key_file=str(keys.private_path), every_records=25, every_seconds=3600.0
        ),
    )
    with AuditLog(cfg, stderr=io.StringIO()) as log:
        for i in range(220):
            log.emit("bpf.load", details=bpf_load(i))
    assert len(rotated_files(directory / LIVE)) >= 3
    return directory


@pytest.fixture
def log(built: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "log"
    shutil.copytree(built, copy)
    return copy


def run(directory: Path, keys: KeyPair | None, *extra: str) -> Result:
    args = ["audit", "verify", str(directory), "--silent", *extra]
    if keys is not None:
        args += ["--key", str(keys.public_path)]
    return CliRunner().invoke(main, args)


def damage_report(directory: Path, keys: KeyPair) -> str:
    """What verify prints for a damaged log; it must exit 1."""
    result = run(directory, keys)
    assert result.exit_code == 1, result.output
    return result.stdout


def lines_of(path: Path) -> list[bytes]:
    return path.read_bytes().splitlines()


def write(path: Path, lines: list[bytes]) -> None:
    path.write_bytes(b"".join(line + b"\n" for line in lines))


def seq(line: bytes) -> int:
    value = orjson.loads(line)["seq"]
    assert isinstance(value, int)
    return value


def quiet_spot(lines: list[bytes]) -> int:
    """An index i with lines i-1..i+2 all plain bpf.load records (no checkpoint near)."""
    for i in range(1, len(lines) - 3):
        if all(b'"type":"bpf.load"' in lines[j] for j in range(i - 1, i + 3)):
            return i
    raise AssertionError("no quiet spot")


def summary(records: int, files: int, checkpoints: int, verdict: str) -> str:
    return f"verified {records:,} records in {files} files, {checkpoints} checkpoints: {verdict}\n"


def test_intact_log_exits_0(log: Path, keys: KeyPair) -> None:
    result = run(log, keys)
    assert result.exit_code == 0, result.output
    assert result.stdout == ""
    report = verify([log], public_key=None)
    assert report.intact
    files = len(rotated_files(log / LIVE)) + 1
    checkpoints = 2 * len(lines_of(sidecar_path(log / LIVE)))
    assert result.stderr == summary(report.records, files, checkpoints, "intact")


def test_without_key_says_truncation_is_not_covered(log: Path) -> None:
    result = run(log, None)
    assert result.exit_code == 0
    assert result.stderr.splitlines()[:2] == [
        "not checked: truncation not checkable: no public key given (--key)",
        "not checked: checkpoint signatures not checked: no public key given (--key)",
    ]


def test_one_byte_edited(log: Path, keys: KeyPair) -> None:
    live = log / LIVE
    lines = lines_of(live)
    i = quiet_spot(lines)
    assert b'"program":"prog' in lines[i]
    lines[i] = lines[i].replace(b'"program":"prog', b'"program":"prOg')
    write(live, lines)
    assert damage_report(log, keys) == (
        f"{live}:{i + 1}: seq {seq(lines[i])}: modified: "
        "its hash does not match the prev of the next line\n"
    )


def test_edit_inside_a_compressed_file(log: Path, keys: KeyPair) -> None:
    target = rotated_files(log / LIVE)[1]
    assert target.name.endswith(".gz")
    lines = gzip.decompress(target.read_bytes()).splitlines()
    i = quiet_spot(lines)
    lines[i] = lines[i].replace(b'"success":true', b'"success":false')
    target.write_bytes(gzip.compress(b"".join(line + b"\n" for line in lines)))
    assert damage_report(log, keys) == (
        f"{target}:{i + 1}: seq {seq(lines[i])}: modified: "
        "its hash does not match the prev of the next line\n"
    )


def test_middle_line_deleted(log: Path, keys: KeyPair) -> None:
    live = log / LIVE
    lines = lines_of(live)
    i = quiet_spot(lines)
    gone = seq(lines[i])
    del lines[i]
    write(live, lines)
    assert damage_report(log, keys) == (
        f"{live}:{i + 1}: seq {gone}: deleted: seq {gone} missing before this line\n"
    )


def test_forged_line_with_correct_looking_prev_inserted(log: Path, keys: KeyPair) -> None:
    live = log / LIVE
    lines = lines_of(live)
    i = quiet_spot(lines)
    forged = orjson.loads(lines[i])
    forged["details"]["program"] = "forged"
    forged["seq"] = seq(lines[i]) + 1
    forged["prev"] = line_hash(lines[i])
    lines.insert(i + 1, orjson.dumps(forged))
    write(live, lines)
    assert damage_report(log, keys) == (
        f"{live}:{i + 2}: seq {forged['seq']}: inserted: "
        f"seq {forged['seq']} appears twice and the next line's prev skips over this one\n"
    )


def test_two_lines_swapped(log: Path, keys: KeyPair) -> None:
    live = log / LIVE
    lines = lines_of(live)
    i = quiet_spot(lines)
    lines[i], lines[i + 1] = lines[i + 1], lines[i]
    write(live, lines)
    assert damage_report(log, keys) == (
        f"{live}:{i + 1}: seq {seq(lines[i])}: reordered: "
        f"seq {seq(lines[i])} comes before seq {seq(lines[i + 1])} (lines swapped)\n"
    )


def test_last_lines_cut_after_a_checkpoint(log: Path, keys: KeyPair) -> None:
    live = log / LIVE
    lines = lines_of(live)
    last = seq(lines[-1])
    kept = lines[:-3]
    write(live, kept)
    sidecar = sidecar_path(live)
    entries = lines_of(sidecar)
    final = orjson.loads(entries[-1])
    assert final["seq"] == last - 1  # the shutdown checkpoint covers the line before it
    assert damage_report(log, keys) == (
        f"{live}:{len(kept)}: seq {last - 3}: truncated: the log ends at seq {last - 3}, "
        f"but checkpoint {sidecar}:{len(entries)} (signed {final['ts']}) "
        f"shows it reached seq {last}\n"
    )


def test_rotated_file_deleted(log: Path, keys: KeyPair) -> None:
    rotated = rotated_files(log / LIVE)
    victim, after = rotated[1], rotated[2]
    first = orjson.loads(gzip.decompress(after.read_bytes()).split(b"\n", 1)[0])
    assert first["type"] == "audit.rotate"
    victim.unlink()
    assert damage_report(log, keys) == (
        f"{after}:1: seq {first['seq']}: file-missing: the rotated file before this one, "
        f"{first['details']['old_file']} (up to seq {first['seq'] - 1}), is missing\n"
    )


def test_files_are_ordered_by_chain_not_by_argument_order(log: Path, keys: KeyPair) -> None:
    chain = [*rotated_files(log / LIVE), log / LIVE]
    report = verify(list(reversed(chain)), public_key=None)
    assert report.problems == []
    assert report.files == [str(p) for p in chain]
    assert report.first_seq == 0


def test_checkpoint_replaced_by_one_signed_by_another_key(
    log: Path, keys: KeyPair, tmp_path: Path
) -> None:
    other = Signer(load_private(generate(tmp_path / "other").private_path))
    sidecar = sidecar_path(log / LIVE)
    entries = lines_of(sidecar)
    original = orjson.loads(entries[1])
    forged = other.sign(original["stream"], original["seq"], original["hash"], original["ts"])
    entries[1] = orjson.dumps(forged)
    write(sidecar, entries)
    result = run(log, keys)
    assert result.exit_code == 1
    ours = Signer(load_private(keys.private_path)).key_id
    assert result.stdout == (
        f"{sidecar}:2: seq {original['seq']}: unknown-key: "
        f"signed by key '{other.key_id}', not by the key given ({ours})\n"
    )
    # The same forgery claiming our key id: the signature does not hold.
    forged["key_id"] = ours
    entries[1] = orjson.dumps(forged)
    write(sidecar, entries)
    assert damage_report(log, keys) == (
        f"{sidecar}:2: seq {original['seq']}: bad-signature: "
        "the signature does not match its fields\n"
    )


def test_torn_last_line(log: Path, keys: KeyPair) -> None:
    live = log / LIVE
    data = live.read_bytes()
    live.write_bytes(data[:-20])
    lines = data[:-20].split(b"\n")
    result = run(log, keys, "--json")
    assert result.exit_code == 1
    report = orjson.loads(result.stdout)
    assert [(p["kind"], p["line"]) for p in report["problems"]] == [
        ("truncated", len(lines) - 1),
        ("torn-line", len(lines)),
    ]
    assert report["intact"] is False


def test_cut_before_any_later_checkpoint_caught_by_periodic_one(
    tmp_path: Path, keys: KeyPair
) -> None:
    """The last record has no count-based checkpoint after it: only the timer seals it.

    The copy is taken while the log is still open (as after a crash), so no
    shutdown checkpoint helps.
    """
    directory = tmp_path / "log"
    cfg = AuditConfig(
        file_path=str(directory / LIVE),
        checkpoint=CheckpointConfig(
            key_file=str(keys.private_path), every_records=1_000_000, every_seconds=0.2
        ),
    )
    copy = tmp_path / "copy"
    copy.mkdir()
    with AuditLog(cfg, stderr=io.StringIO()) as log:
        watch = CheckpointWatch(log)
        for i in range(3):
            log.emit("bpf.load", details=bpf_load(i))
        log.flush()
        # audit.start is seq 0; maybe a periodic checkpoint in between
        records = [orjson.loads(line) for line in lines_of(directory / LIVE)]
        last_data = max(r["seq"] for r in records if r["type"] == "bpf.load")
        sidecar = sidecar_path(directory / LIVE)
        # One covering the record, and one more for an interval with no records: real
        # 0.2 s intervals, as the processor's timer reads the monotonic clock itself.
        watch.wait_for(lambda seen: any(cp["seq"] >= last_data + 1 for cp in seen))
        log.flush()  # the checkpoint line and its checkpoints-file entry are on disk
        shutil.copy(sidecar, copy / sidecar.name)  # first, so the log copy holds at least as much
        shutil.copy(directory / LIVE, copy / LIVE)
    lines = lines_of(copy / LIVE)
    assert run(copy, keys).exit_code == 0
    cut = next(n for n, line in enumerate(lines) if seq(line) == last_data)
    write(copy / LIVE, lines[:cut])
    result = run(copy, keys)
    assert result.exit_code == 1
    assert result.stdout.startswith(
        f"{copy / LIVE}:{cut}: seq {last_data - 1}: truncated: the log ends at seq {last_data - 1}"
    )
    assert result.stdout.count("\n") == 1


def _sealed_stream(count: int) -> list[bytes]:
    chain = Chain()
    lines = []
    for i in range(count):
        record: dict[str, object] = {
            "v": "1",
            "seq": 0,
            "ts": "2026-11-27T18:00:00.000000000Z",
            "type": "bpf.load",
            "actor": "bpf/loader",
            "details": bpf_load(i),
            "prev": "",
        }
        lines.append(chain.seal(record))
    return lines


def test_gap_named_by_a_write_error_loss_is_not_damage(tmp_path: Path) -> None:
    """What ``on_write_error: drop`` leaves: seqs 3 and 4 sealed but never written."""
    lines = _sealed_stream(5)
    chain = Chain(5, line_hash(lines[-1]))
    loss = {
        "v": "1",
        "seq": 0,
        "ts": "2026-11-27T18:00:01.000000000Z",
        "type": "audit.loss",
        "actor": "audit/writer",
        "details": {
            "count": 2,
            "reason": "write_error",
            "first_seq": 3,
            "last_seq": 4,
            "after_seq": 2,
            "types": {},
        },
        "prev": "",
    }
    written = [*lines[:3], chain.seal(loss)]
    write(tmp_path / LIVE, written)
    assert verify([tmp_path / LIVE]).problems == []
    write(tmp_path / LIVE, [*lines[:3], lines[4]])  # the same gap, unexplained
    [problem] = verify([tmp_path / LIVE]).problems
    assert (problem.line, problem.seq, problem.kind) == (4, 3, "deleted")


def test_usage_errors_exit_2(tmp_path: Path, keys: KeyPair) -> None:
    runner = CliRunner()
    result = runner.invoke(main, ["audit", "verify", str(tmp_path / "none.jsonl")])
    assert (result.exit_code, result.stderr) == (
        2,
        f"Error: {tmp_path / 'none.jsonl'}: No such file or directory\n",
    )
    (tmp_path / LIVE).write_bytes(b"")
    bad = tmp_path / "bad.pem"
    bad.write_text("x")
    result = runner.invoke(main, ["audit", "verify", str(tmp_path / LIVE), "--key", str(bad)])
    assert result.exit_code == 2
    assert result.stderr.startswith(f"Error: --key: {bad}: not a PEM public key")


def test_json_output_of_an_intact_log(log: Path, keys: KeyPair) -> None:
    result = run(log, keys, "--json")
    assert result.exit_code == 0
    report = orjson.loads(result.stdout)
    assert report["intact"] is True
    assert report["problems"] == []
    assert report["first_seq"] == 0
    assert report["files"][-1] == str(log / LIVE)
    assert report["checkpoints_file"] == str(sidecar_path(log / LIVE))
    assert report["stream"] == line_hash(
        gzip.decompress(rotated_files(log / LIVE)[0].read_bytes()).split(b"\n", 1)[0]
    )


def test_edited_seq_or_prev_field_is_one_modified_line(tmp_path: Path) -> None:
    lines = _sealed_stream(8)
    live = tmp_path / LIVE
    edited = list(lines)
    edited[4] = edited[4].replace(b'"seq":4,', b'"seq":5,')
    write(live, edited)
    assert [(p.line, p.seq, p.kind) for p in verify([live]).problems] == [(5, 5, "modified")]
    edited = list(lines)
    record = orjson.loads(edited[4])
    record["prev"] = "sha256:" + "1" * 64
    edited[4] = orjson.dumps(record)
    write(live, edited)
    assert [(p.line, p.seq, p.kind) for p in verify([live]).problems] == [(5, 4, "modified")]


def test_directory_ignores_files_that_are_not_logs(log: Path, keys: KeyPair) -> None:
    (log / "notes.txt").write_text("not a log\n")
    (log / f"{LIVE}.torn-20261127T180000.000000Z").write_bytes(b'{"v":"1","se')
    assert run(log, keys).exit_code == 0


def test_line_moved_far_back_is_reordered_not_deleted(tmp_path: Path) -> None:
    lines = _sealed_stream(8)
    moved = [*lines[:2], *lines[3:7], lines[2], lines[7]]
    write(tmp_path / LIVE, moved)
    problems = verify([tmp_path / LIVE]).problems
    assert [(p.line, p.seq, p.kind, p.explanation) for p in problems] == [
        (7, 2, "reordered", "seq 2 after seq 6")
    ]
