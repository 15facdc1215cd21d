"""Checkpoint signing keys: ``kerno_otel.audit.keys`` and ``kerno-otel keys generate``."""

from __future__ import annotations

import hashlib
import stat
from pathlib import Path

import pytest
from click.testing import CliRunner
from cryptography.hazmat.primitives import serialization

from kerno_otel.audit.keys import KeyFileError, generate, key_id, load_private, load_public
from kerno_otel.cli.app import main


def test_generate_writes_modes_and_key_id(tmp_path: Path) -> None:
    pair = generate(tmp_path / "keys")
    assert stat.S_IMODE(pair.private_path.stat().st_mode) == 0o600
    assert stat.S_IMODE(pair.public_path.stat().st_mode) == 0o644
    public = load_public(pair.public_path)
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    assert pair.key_id == hashlib.sha256(raw).hexdigest()[:16]
    assert key_id(load_private(pair.private_path).public_key()) == pair.key_id
    assert pair.private_path.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")


def test_generate_refuses_to_overwrite(tmp_path: Path) -> None:
    pair = generate(tmp_path)
    before = pair.private_path.read_bytes()
    with pytest.raises(KeyFileError) as info:
        generate(tmp_path)
    assert str(info.value) == f"{pair.private_path}: already exists; refusing to overwrite a key"
    assert pair.private_path.read_bytes() == before


def test_load_rejects_a_non_key(tmp_path: Path) -> None:
    path = tmp_path / "junk.pem"
    path.write_text("not a key\n")
    with pytest.raises(KeyFileError) as info:
        load_private(path)
    assert str(info.value).startswith(f"{path}: not an unencrypted PEM private key")
    with pytest.raises(KeyFileError) as info:
        load_public(tmp_path / "missing.pem")
    assert str(info.value) == f"{tmp_path / 'missing.pem'}: No such file or directory"


def test_cli_keys_generate(tmp_path: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(main, ["keys", "generate", str(tmp_path / "k")])
    assert result.exit_code == 0
    kid = key_id(load_public(tmp_path / "k" / "kerno-audit-signing.pub.pem"))
    assert result.output == (
        f"key id: {kid}\n"
        f"private key: {tmp_path / 'k' / 'kerno-audit-signing.pem'}\n"
        f"public key: {tmp_path / 'k' / 'kerno-audit-signing.pub.pem'}\n"
    )
    again = runner.invoke(main, ["keys", "generate", str(tmp_path / "k")])
    assert again.exit_code == 2
    assert again.output == (
        f"Error: {tmp_path / 'k' / 'kerno-audit-signing.pem'}: already exists; "
        "refusing to overwrite a key\n"
    )
