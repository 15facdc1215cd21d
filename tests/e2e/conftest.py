"""What a new user does, with real installs: one fresh venv per test session, shared.

The venv sees this environment's packages (kerno-otel, its dependencies, the test tools)
through a ``.pth`` file, and gets two plugin distributions pip-installed into it, offline
(``--no-index --no-build-isolation``): the example from ``docs/examples/`` and a
distribution of broken plugins built here, one entry point per way of breaking. Nothing is
installed into the test environment itself. Building the venv costs a few seconds, so it is
made once (session scope) and every e2e test selects its plugins with ``KERNO_OTEL_PLUGINS``.
"""

from __future__ import annotations

import os
import site
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent.parent
REPO = TESTS.parent
EXAMPLE = REPO / "docs" / "examples" / "kerno-otel-example"
if str(TESTS) not in sys.path:
    sys.path.insert(0, str(TESTS))  # tests/helpers.py, tests/otlp_receivers.py

#: Each register hook and what its broken plugin calls ``register`` with (nothing: it raises).
REGISTER_HOOKS = (
    "register_event_types",
    "register_redaction_rules",
    "register_sources",
    "register_doctor_rules",
    "register_sinks",
    "register_ai_providers",
    "register_http_routes",
)
#: The other hooks, with their arguments.
OTHER_HOOKS = {
    "make_analyzer": "audit, config, providers",
    "daemon_startup": "context",
    "daemon_shutdown": "context, reason, uptime_s",
    "config_reload": "context, old, new, diff, source, path, uid, error",
    "daemon_panic": "context, exception_type, panic_digest",
}

_RAISES = """
from kerno_otel import hookimpl


@hookimpl
def {hook}({args}):
    raise RuntimeError("{hook} is broken in this plugin")
"""

# An event type whose details schema is not closed, beside a good one: the bad one is
# refused alone; the good one is published and usable.
_BAD_SCHEMA = """
from kerno_otel import EventType, hookimpl

CLOSED = {"type": "object", "properties": {}, "additionalProperties": False}


@hookimpl
def register_event_types(register):
    register(EventType("e2e.open", "e2e/plugin", schema={"type": "object"}))
    register(EventType("e2e.good", "e2e/plugin", schema=CLOSED))


@hookimpl
def daemon_startup(context):
    context.audit.emit("e2e.good", details={})
"""

_CRASHING_RULE = """
from kerno_otel import hookimpl


def crashing_rule(given):
    raise ZeroDivisionError("this rule divides by zero")


@hookimpl
def register_doctor_rules(register):
    register("e2e_crashing_rule", crashing_rule)
"""

# A source whose factory raises: the cycle runs on without it.
_SOURCE_RAISES = """
from kerno_otel import hookimpl


def factory(config):
    raise OSError("this source cannot open its device")


@hookimpl
def register_sources(register):
    register("e2e_source", factory)
"""

# Ends the daemon with a panic (an exception in a thread it starts), so that the other
# plugins' daemon_panic hooks run.
_PANICKER = """
import threading

from kerno_otel import hookimpl


@hookimpl
def daemon_startup(context):
    def boom():
        raise RuntimeError("a plugin thread died")

    threading.Thread(target=boom).start()
"""


def broken_modules() -> dict[str, str]:
    """Entry-point name -> module source, for the broken-plugins distribution."""
    modules = {
        f"raise_{hook}": _RAISES.format(hook=hook, args="register") for hook in REGISTER_HOOKS
    }
    modules.update(
        {
            f"raise_{hook}": _RAISES.format(hook=hook, args=args)
            for hook, args in OTHER_HOOKS.items()
        }
    )
    modules["bad_schema"] = _BAD_SCHEMA
    modules["crashing_rule"] = _CRASHING_RULE
    modules["panicker"] = _PANICKER
    modules["source_raises"] = _SOURCE_RAISES
    return modules


def write_broken_distribution(root: Path) -> Path:
    """A source tree of ``kerno-e2e-broken`` 0.1: one plugin per way of breaking."""
    package = root / "kerno_e2e_broken"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text('"""Broken kerno-otel plugins for the e2e tests."""\n')
    points = []
    for name, source in broken_modules().items():
        (package / f"{name}.py").write_text(source)
        points.append(f'e2e_{name} = "kerno_e2e_broken.{name}"')
    (root / "pyproject.toml").write_text(
        "[build-system]\n"
        'requires = ["hatchling>=1.21"]\n'
        'build-backend = "hatchling.build"\n\n'
        "[project]\n"
        'name = "kerno-e2e-broken"\n'
        'version = "0.1"\n'
        'dependencies = ["kerno-otel"]\n\n'
        '[project.entry-points."kerno_otel.plugins"]\n' + "\n".join(points) + "\n\n"
        "[tool.hatch.build.targets.wheel]\n"
        'packages = ["kerno_e2e_broken"]\n'
    )
    return root


def scratch_venv(directory: Path) -> Path:
    """A new venv that sees this environment's packages; its python."""
    venv = directory / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = venv / "bin" / "python"
    purelib = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    # addsitedir (not a plain path line) so the editable install's own .pth runs too.
    lines = [f"import site; site.addsitedir({p!r})" for p in site.getsitepackages()]
    (Path(purelib) / "_kerno_parent_env.pth").write_text("\n".join(lines) + "\n")
    return python


@dataclass(frozen=True)
class Venv:
    """The session's venv: run ``kerno-otel`` in it with a chosen set of plugins."""

    python: Path
    root: Path

    def env(self, plugins: str, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("KERNO_", "OTEL_"))}
        env["KERNO_OTEL_PLUGINS"] = plugins
        env.update(extra)
        return env

    def kerno(
        self, *args: str, env: Mapping[str, str], timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(self.python), "-m", "kerno_otel", *args],
            capture_output=True,
            text=True,
            env=dict(env),
            timeout=timeout,
            check=False,
        )


@pytest.fixture(scope="session")
def venv(tmp_path_factory: pytest.TempPathFactory) -> Venv:
    root = tmp_path_factory.mktemp("e2e")
    python = scratch_venv(root)
    broken = write_broken_distribution(root / "kerno-e2e-broken")
    install = subprocess.run(
        [
            str(python),
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "--no-index",
            str(EXAMPLE),
            str(broken),
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    assert install.returncode == 0, install.stderr
    # `kerno-otel` on the venv's PATH, as a user who pip-installed it has (the console
    # script of the editable install belongs to the parent environment's python).
    script = python.parent / "kerno-otel"
    script.write_text(f'#!/bin/sh\nexec "{python}" -m kerno_otel "$@"\n')
    script.chmod(0o755)
    return Venv(python, root)
