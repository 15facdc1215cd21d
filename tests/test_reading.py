"""Reading logs back (kerno_otel/verify/reading.py): plain or gzip, by name or content, or stdin."""

from __future__ import annotations

import gzip
import io
import os
import sys
from pathlib import Path

import pytest

from kerno_otel.verify.reading import check_readable, first_line, open_log, read_all

DATA = b'{"seq":0}\n{"seq":1}\n'


def pipe_stdin(monkeypatch: pytest.MonkeyPatch, data: bytes) -> io.TextIOWrapper:
    """Standard input as a real pipe holding ``data``.

    A pipe, not a BytesIO: ``open_log`` sniffs gzip with ``peek``, which only a
    buffered reader has, and must not consume what it peeked at.
    """
    read_fd, write_fd = os.pipe()
    os.write(write_fd, data)
    os.close(write_fd)
    stdin = io.TextIOWrapper(open(read_fd, "rb"))  # noqa: SIM115 - closed by the caller
    monkeypatch.setattr(sys, "stdin", stdin)
    return stdin


def test_check_readable_accepts_a_file_and_stdin(tmp_path: Path) -> None:
    path = tmp_path / "a.jsonl"
    path.write_bytes(DATA)
    assert check_readable(str(path)) is None
    assert check_readable("-") is None


def test_check_readable_raises_for_a_missing_file_or_a_directory(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        check_readable(str(tmp_path / "missing.jsonl"))
    with pytest.raises(IsADirectoryError):
        check_readable(str(tmp_path))


def test_a_plain_file_is_its_own_underlying_file_and_is_closed_after(tmp_path: Path) -> None:
    path = tmp_path / "a.jsonl"
    path.write_bytes(DATA)
    with open_log(str(path)) as (stream, raw):
        assert stream is raw
        assert stream.read() == DATA
    assert raw.closed


@pytest.mark.parametrize("name", ["a.jsonl.gz", "renamed.jsonl"])
def test_gzip_is_read_by_name_or_by_content(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    path.write_bytes(gzip.compress(DATA))
    with open_log(str(path)) as (stream, raw):
        assert stream is not raw
        assert stream.read() == DATA
        assert raw.tell() == path.stat().st_size  # progress counts compressed bytes
    assert raw.closed
    assert read_all(str(path)) == DATA


def test_open_log_raises_for_a_missing_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError), open_log(str(tmp_path / "missing.jsonl")):
        pass


def test_a_gz_name_over_plain_content_is_not_gzip(tmp_path: Path) -> None:
    path = tmp_path / "a.jsonl.gz"
    path.write_bytes(DATA)
    with pytest.raises(gzip.BadGzipFile):
        read_all(str(path))


def test_gzip_cut_short_raises_eof(tmp_path: Path) -> None:
    path = tmp_path / "a.jsonl.gz"
    path.write_bytes(gzip.compress(DATA * 100)[:-12])
    with pytest.raises(EOFError):
        read_all(str(path))


@pytest.mark.parametrize("compressed", [False, True], ids=["plain", "gzip"])
def test_stdin_plain_or_gzip_and_left_open(
    monkeypatch: pytest.MonkeyPatch, compressed: bool
) -> None:
    stdin = pipe_stdin(monkeypatch, gzip.compress(DATA) if compressed else DATA)
    try:
        with open_log("-") as (stream, raw):
            assert raw is stdin.buffer
            assert stream.read() == DATA
        assert not raw.closed
    finally:
        stdin.close()


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (DATA, b'{"seq":0}\n'),
        (b'{"seq":0}', b'{"seq":0}'),
        (b"", b""),
    ],
    ids=["with-newline", "no-newline", "empty"],
)
def test_first_line_keeps_its_newline(tmp_path: Path, content: bytes, expected: bytes) -> None:
    path = tmp_path / "a.jsonl"
    path.write_bytes(content)
    assert first_line(str(path)) == expected
    gz = tmp_path / "a.jsonl.gz"
    gz.write_bytes(gzip.compress(content))
    assert first_line(str(gz)) == expected
