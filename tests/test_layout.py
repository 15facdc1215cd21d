"""The layout's rules: plugins use the public API only; the core never imports a plugin."""

from __future__ import annotations

import ast
from collections.abc import Callable, Iterator
from pathlib import Path

import kerno_otel

REPO = Path(__file__).resolve().parent.parent
#: What a plugin may import from kerno-otel: the package itself and its public modules.
PUBLIC_MODULES = frozenset(
    {"kerno_otel", "kerno_otel.hookspecs", "kerno_otel.findings", "kerno_otel.contract"}
)


def imports(path: Path) -> Iterator[tuple[int, str]]:
    """(line, dotted name) of everything ``path`` imports, wherever in the module.

    ``from a import b`` yields ``a.b`` (b may be a submodule); a string given to
    ``importlib.import_module`` or ``__import__`` counts too.
    """
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.lineno, node.module
            for alias in node.names:
                yield node.lineno, f"{node.module}.{alias.name}"
        elif isinstance(node, ast.Call):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            if name in ("import_module", "__import__") and node.args:
                first = node.args[0]
                if isinstance(first, ast.Constant) and isinstance(first.value, str):
                    yield node.lineno, first.value


def private_use(name: str) -> bool:
    """Whether importing ``name`` reaches past kerno-otel's public API."""
    if name != "kerno_otel" and not name.startswith("kerno_otel."):
        return False
    if name in PUBLIC_MODULES:
        return False
    parent, _, attr = name.rpartition(".")
    # `from kerno_otel import AuditLog` (a public name), not `from kerno_otel import config`.
    return not (parent in PUBLIC_MODULES and (parent != "kerno_otel" or attr in kerno_otel.__all__))


def offenders(root: Path, bad: Callable[[str], bool]) -> list[str]:
    """``FILE:LINE: name`` for every import under ``root`` that ``bad`` refuses."""
    return [
        f"{path.relative_to(REPO)}:{line}: {name}"
        for path in sorted(root.rglob("*.py"))
        for line, name in sorted(imports(path))
        if bad(name)
    ]


def test_plugins_import_only_the_public_api() -> None:
    assert offenders(REPO / "plugins", private_use) == []


def test_the_core_never_imports_a_plugin() -> None:
    def plugin(name: str) -> bool:
        return name == "kerno_otel_plugins" or name.startswith("kerno_otel_plugins.")

    assert offenders(REPO / "kerno_otel", plugin) == []


def test_the_check_sees_every_kind_of_import(tmp_path: Path) -> None:
    (tmp_path / "m.py").write_text(
        "import kerno_otel.config.load\n"
        "from kerno_otel import config, AuditLog\n"
        "from kerno_otel.hookspecs import hookimpl\n"
        "def f():\n"
        "    from kerno_otel.doctor import engine\n"
        "    import importlib\n"
        "    return importlib.import_module('kerno_otel_plugins.analyzer')\n"
    )
    names = [name for _, name in sorted(imports(tmp_path / "m.py"))]
    assert [n for n in names if private_use(n)] == [
        "kerno_otel.config.load",
        "kerno_otel.config",
        "kerno_otel.doctor",
        "kerno_otel.doctor.engine",
    ]
    assert "kerno_otel_plugins.analyzer" in names
