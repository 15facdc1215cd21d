"""``audit bundle`` and ``audit verify BUNDLE.tar.gz``: a bundle made here verifies from the
bundle alone (also in a fresh venv), and one byte changed anywhere fails, naming the file."""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from review_log import Built, build

from kerno_otel.cli.app import main
from kerno_otel.review.bundle import MANIFEST, gzip_bytes

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Built:
    root = tmp_path_factory.mktemp("bundle")
    return build(root / "log", root / "keys")


@pytest.fixture(scope="module")
def bundle(built: Built, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("out") / "evidence.tar.gz"
    result = CliRunner().invoke(
        main,
        ["audit", "bundle", str(built.directory), "--key", str(built.keys.public_path),
         "-o", str(out)],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert result.stderr == (
        f"wrote {out}: 137 records; INTACT: chain, seq, signatures and truncation all checked\n"
    )
    return out


def verify(path: Path) -> Result:
    return CliRunner().invoke(main, ["audit", "verify", str(path)])


def members(path: Path) -> dict[str, bytes]:
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(path.read_bytes()))) as tar:
        out: dict[str, bytes] = {}
        for info in tar:
            f = tar.extractfile(info)
            assert f is not None
            out[info.name] = f.read()
        return out


def repack(path: Path, files: dict[str, bytes], out: Path) -> Path:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o644
            tar.addfile(info, io.BytesIO(data))
    out.write_bytes(gzip_bytes(raw.getvalue()))
    return out


def sums(files: dict[str, bytes]) -> bytes:
    return "".join(
        f"{hashlib.sha256(data).hexdigest()}  {name}\n"
        for name, data in files.items()
        if name != MANIFEST
    ).encode()


def test_bundle_holds_everything_a_reviewer_needs_and_verifies(bundle: Path, built: Built) -> None:
    names = list(members(bundle))
    logs = sorted(p.name for p in built.directory.iterdir() if p.name.endswith((".gz", ".jsonl")))
    assert sorted(n for n in names if n.startswith("logs/")) == sorted(
        [*(f"logs/{n}" for n in logs), "logs/kerno-audit.jsonl.checkpoints"]
    )
    schemas = sorted(p.name for p in (REPO / "schemas" / "kerno-audit" / "v1").iterdir())
    assert [n for n in names if n.startswith("schemas/")] == [
        f"schemas/kerno-audit/v1/{s}" for s in schemas
    ]
    first_schema = names.index(f"schemas/kerno-audit/v1/{schemas[0]}")
    assert names[first_schema - 1] == "key/public.pem"
    assert names[-4:] == ["report.json", "report.html", "README.txt", MANIFEST]
    assert members(bundle)["key/public.pem"] == built.keys.public_path.read_bytes()
    result = verify(bundle)
    assert (result.exit_code, result.stdout) == (0, "")
    assert result.stderr.endswith(
        f"bundle {bundle}: {len(names)} files, 137 records in 1 stream(s): intact\n"
    )
    # SHA256SUMS is what sha256sum -c reads.
    manifest = members(bundle)[MANIFEST].decode().splitlines()
    assert len(manifest) == len(names) - 1


def test_bundle_is_the_same_bytes_every_time(bundle: Path, built: Built, tmp_path: Path) -> None:
    again = tmp_path / "again.tar.gz"
    CliRunner().invoke(
        main,
        ["audit", "bundle", str(built.directory), "--key", str(built.keys.public_path),
         "-o", str(again)],
    )  # fmt: skip
    assert again.read_bytes() == bundle.read_bytes()


@pytest.mark.parametrize("where", [*range(12), *(f / 20 for f in range(1, 20)), -9, -5, -1])
def test_one_byte_changed_anywhere_fails_naming_the_file(
    bundle: Path, tmp_path: Path, where: float
) -> None:
    raw = bytearray(bundle.read_bytes())
    at = int(where * len(raw)) if isinstance(where, float) else where % len(raw)
    raw[at] ^= 0x20
    damaged = tmp_path / "damaged.tar.gz"
    damaged.write_bytes(raw)
    result = verify(damaged)
    assert result.exit_code == 1, (at, result.output)
    first = result.stdout.splitlines()[0]
    assert first.startswith(str(damaged)) or first.split(":")[0] in members(bundle), first


def test_appended_byte_fails(bundle: Path, tmp_path: Path) -> None:
    damaged = tmp_path / "damaged.tar.gz"
    damaged.write_bytes(bundle.read_bytes() + b"\n")
    result = verify(damaged)
    assert (result.exit_code, result.stdout) == (
        1,
        f"{damaged}: bytes after the end of the compressed data (modified)\n",
    )


def test_a_member_changed_is_named(bundle: Path, tmp_path: Path) -> None:
    files = members(bundle)
    live = bytearray(files["logs/kerno-audit.jsonl"])
    live[200] ^= 0x01
    files["logs/kerno-audit.jsonl"] = bytes(live)
    result = verify(repack(bundle, files, tmp_path / "x.tar.gz"))
    assert result.exit_code == 1
    assert result.stdout.splitlines()[0] == (
        f"logs/kerno-audit.jsonl: modified (its SHA-256 differs from the one in {MANIFEST})"
    )
    # Even with SHA256SUMS made to match, the chain names the line.
    files[MANIFEST] = sums(files)
    result = verify(repack(bundle, files, tmp_path / "y.tar.gz"))
    assert result.exit_code == 1
    assert result.stdout.splitlines()[0] == (
        "report.json: does not match the report of the logs in the bundle"
    )
    assert result.stdout.splitlines()[1].startswith("logs/kerno-audit.jsonl:1: seq ")


def test_an_edited_report_is_caught(bundle: Path, tmp_path: Path) -> None:
    files = members(bundle)
    files["report.json"] = files["report.json"].replace(b'"intact": true', b'"intact": false', 1)
    files[MANIFEST] = sums(files)
    result = verify(repack(bundle, files, tmp_path / "x.tar.gz"))
    assert (result.exit_code, result.stdout) == (
        1,
        "report.json: does not match the report of the logs in the bundle\n",
    )


def _hostile(kind: str) -> tarfile.TarInfo:
    names = {"dotdot": "../escaped", "absolute": "/tmp/escaped-abs"}
    info = tarfile.TarInfo(names.get(kind, kind))
    if kind == "symlink":
        info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
    elif kind == "hardlink":
        info.type, info.linkname = tarfile.LNKTYPE, "README.txt"
    elif kind == "device":
        info.type, info.devmajor, info.devminor = tarfile.CHRTYPE, 1, 3
    elif kind == "fifo":
        info.type = tarfile.FIFOTYPE
    return info


@pytest.mark.parametrize("kind", ["dotdot", "absolute", "symlink", "hardlink", "device", "fifo"])
def test_hostile_members_are_refused_and_nothing_lands_outside(
    bundle: Path, tmp_path: Path, kind: str
) -> None:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in members(bundle).items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        hostile = _hostile(kind)
        payload = b"owned\n" if hostile.isfile() else b""
        hostile.size = len(payload)
        tar.addfile(hostile, io.BytesIO(payload))
    damaged = tmp_path / "hostile.tar.gz"
    damaged.write_bytes(gzip_bytes(raw.getvalue()))
    result = verify(damaged)
    assert result.exit_code == 1
    assert result.stdout.splitlines()[0].startswith(f"{damaged}: ")
    assert "refused" in result.stdout or "unsafe" in result.stdout
    assert not Path("/tmp/escaped-abs").exists()
    assert not (Path(os.sep) / "tmp" / "escaped").exists()


def test_verifies_in_a_fresh_venv_from_the_bundle_alone(bundle: Path, tmp_path: Path) -> None:
    """The package installed offline from this worktree (not editable) into a new venv
    whose only other packages are the dependencies; the bundle copied somewhere else."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = venv / "bin" / "python"
    site = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    # The dependencies only: plain path lines do not run this environment's .pth files,
    # so the editable install of the worktree stays out.
    deps = [p for p in sys.path if p.endswith("site-packages")]
    Path(site, "deps.pth").write_text("".join(f"{p}\n" for p in deps))
    subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", "--no-index", "--no-deps",
         "--no-build-isolation", str(REPO)],
        check=True, capture_output=True, timeout=240,
    )  # fmt: skip
    where = subprocess.run(
        [str(python), "-c", "import kerno_otel; print(kerno_otel.__file__)"],
        capture_output=True, text=True, check=True, cwd=tmp_path,
    ).stdout  # fmt: skip
    assert where.startswith(str(venv)), where
    elsewhere = tmp_path / "reviewer"
    elsewhere.mkdir()
    copy = elsewhere / "evidence.tar.gz"
    copy.write_bytes(bundle.read_bytes())
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KERNO", "PYTHON"))}
    result = subprocess.run(
        [str(venv / "bin" / "kerno-otel"), "audit", "verify", copy.name],
        capture_output=True, text=True, cwd=elsewhere, env=env, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stderr.splitlines()[-1] == (
        f"bundle {copy.name}: {len(members(bundle))} files, 137 records in 1 stream(s): intact"
    )
    raw = bytearray(copy.read_bytes())
    raw[len(raw) // 2] ^= 0x01
    copy.write_bytes(raw)
    damaged = subprocess.run(
        [str(venv / "bin" / "kerno-otel"), "audit", "verify", copy.name],
        capture_output=True, text=True, cwd=elsewhere, env=env, timeout=120,
    )  # fmt: skip
    assert damaged.returncode == 1


def test_a_bundle_repacked_by_another_gzip_still_names_the_changed_file(
    bundle: Path, tmp_path: Path
) -> None:
    """``tar xzf``, edit, ``tar czf``: the header is not ours, and the edit is named."""
    files = members(bundle)
    files["README.txt"] = files["README.txt"].replace(b"offline", b"online", 1)
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    repacked = tmp_path / "repacked.tar.gz"
    repacked.write_bytes(gzip.compress(raw.getvalue()))
    result = verify(repacked)
    assert result.exit_code == 1
    assert result.stdout.splitlines() == [
        f"{repacked}: the gzip header is not the one kerno-otel writes (modified)",
        f"README.txt: modified (its SHA-256 differs from the one in {MANIFEST})",
    ]


def test_a_bundle_whose_logs_are_not_log_files_is_a_problem_not_a_crash(
    bundle: Path, tmp_path: Path
) -> None:
    files = {
        name: data
        for name, data in members(bundle).items()
        if not name.startswith("logs/kerno-audit") or name.endswith(".checkpoints")
    }
    files["logs/notes.txt"] = b"nothing here\n"
    files[MANIFEST] = sums(files)
    result = verify(repack(bundle, files, tmp_path / "x.tar.gz"))
    assert (result.exit_code, result.stdout) == (1, "logs/: no audit log files to verify\n")
    assert "Error" not in result.stderr


@pytest.mark.parametrize("last", [b"\x0b", b"\x0c", b"\x1c", b""])
def test_sha256sums_is_read_as_written_not_as_any_line_break(
    bundle: Path, tmp_path: Path, last: bytes
) -> None:
    """A vertical tab for the last newline still splits in str.splitlines(); the file
    is not the one written all the same, and is named."""
    files = members(bundle)
    files[MANIFEST] = files[MANIFEST][:-1] + last
    result = verify(repack(bundle, files, tmp_path / "x.tar.gz"))
    assert result.exit_code == 1
    assert result.stdout.splitlines()[0].startswith(f"{MANIFEST}:"), result.stdout


def test_a_bundle_without_its_key_says_so_without_a_temporary_path(
    bundle: Path, tmp_path: Path
) -> None:
    files = {n: d for n, d in members(bundle).items() if n != "key/public.pem"}
    files[MANIFEST] = sums(files)
    result = verify(repack(bundle, files, tmp_path / "x.tar.gz"))
    assert result.exit_code == 1
    assert "key/public.pem: not a usable public key (key/public.pem: " in result.stdout
    assert "kerno-bundle-" not in result.output


def test_problems_name_the_bundle_s_files_not_a_temporary_directory(
    bundle: Path, tmp_path: Path
) -> None:
    """A log cut short: the truncation problem names the checkpoints file as it is in
    the bundle (logs/...), not where verify unpacked it."""
    files = members(bundle)
    live = files["logs/kerno-audit.jsonl"].splitlines(keepends=True)
    files["logs/kerno-audit.jsonl"] = b"".join(live[:-3])
    files[MANIFEST] = sums(files)
    result = verify(repack(bundle, files, tmp_path / "x.tar.gz"))
    assert result.exit_code == 1
    truncated = [line for line in result.stdout.splitlines() if ": truncated: " in line]
    assert truncated and "checkpoint logs/kerno-audit.jsonl.checkpoints:" in truncated[0]
    assert "kerno-bundle-" not in result.output
