from __future__ import annotations

import subprocess
import sys
import types

import kerno_otel


def test_public_names_are_exactly_all() -> None:
    # Submodules and subpackages appear as attributes once imported; `annotations` is
    # the __future__ import. dir() includes the names imported on first use.
    public = sorted(
        n
        for n in dir(kerno_otel)
        if (not n.startswith("_") or n == "__version__")
        and not isinstance(getattr(kerno_otel, n), types.ModuleType)
        and n != "annotations"
    )
    assert public == sorted(kerno_otel.__all__)


def test_heavy_names_load_on_first_use() -> None:
    # A fresh interpreter: the audit worker's processes import the package and must not
    # pay for the forwarder's protobuf or the doctor.
    code = (
        "import sys, kerno_otel; "
        "print(sorted(m for m in ('kerno_otel.forward.forwarder', 'kerno_otel.doctor.engine') "
        "if m in sys.modules)); "
        "print(kerno_otel.Forwarder.__module__, kerno_otel.build_doctor.__module__)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout == "[]\nkerno_otel.forward.forwarder kerno_otel.doctor.engine\n"


def test_every_public_name_has_a_docstring() -> None:
    for name in kerno_otel.__all__:
        if name in ("__version__", "hookimpl"):
            continue
        assert getattr(kerno_otel, name).__doc__, name
