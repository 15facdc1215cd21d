from __future__ import annotations

import kerno_otel


def test_public_names_are_exactly_all() -> None:
    public = sorted(n for n in vars(kerno_otel) if not n.startswith("_") or n == "__version__")
    # Submodules appear as attributes once imported (private, cli, or the plugin-contract
    # modules hookspecs, findings and doctor); `annotations` is the __future__ import.
    modules = {"cli", "annotations", "hookspecs", "findings", "doctor"}
    public = [n for n in public if n not in modules]
    assert public == sorted(kerno_otel.__all__)


def test_every_public_name_has_a_docstring() -> None:
    for name in kerno_otel.__all__:
        if name in ("__version__", "hookimpl"):
            continue
        assert getattr(kerno_otel, name).__doc__, name
