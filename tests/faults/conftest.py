"""Fixtures of the fault suite: a small tmpfs to fill for real (root only)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from tmpfs import fill, needs_root, tmpfs

__all__ = ["fill", "needs_root", "small_disk"]


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 2 MB tmpfs, unmounted after the test."""
    with tmpfs(tmp_path / "disk", "2m") as mount:
        yield mount
