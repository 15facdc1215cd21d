from __future__ import annotations

import types

import kerno_otel


def test_public_names_are_exactly_all() -> None:
    # Submodules and subpackages appear as attributes once imported; `annotations` is
    # the __future__ import.
    public = sorted(
        n
        for n, value in vars(kerno_otel).items()
        if (not n.startswith("_") or n == "__version__")
        and not isinstance(value, types.ModuleType)
        and n != "annotations"
    )
    assert public == sorted(kerno_otel.__all__)


def test_every_public_name_has_a_docstring() -> None:
    for name in kerno_otel.__all__:
        if name in ("__version__", "hookimpl"):
            continue
        assert getattr(kerno_otel, name).__doc__, name
