"""The exported schema set, checked offline by outside validators as docs/audit-schema.md says.

Issue 13: ``check-jsonschema --schemafile record.schema.json`` went to the network for the
``$ref``s. ``bundle.schema.json`` holds the whole set; these tests run the doc's own commands
(check-jsonschema, python-jsonschema, jsonschema-rs, all from PyPI) on a log the daemon wrote
with a third-party plugin loaded, inside a network namespace with no network at all.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import Venv

DOC = Path(__file__).resolve().parents[2] / "docs" / "audit-schema.md"
PLUGINS = "example,lifecycle,e2e_bad_schema"


UNSHARE = shutil.which("unshare") or "unshare"


def _unshare_works() -> bool:
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        return False
    return subprocess.run([UNSHARE, "-n", "true"], capture_output=True).returncode == 0


pytestmark = pytest.mark.skipif(
    not _unshare_works(), reason="cutting the network off (unshare -n) needs root"
)


def offline(command: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """``command`` in a new network namespace: no interface but a downed loopback."""
    return subprocess.run(
        [UNSHARE, "-n", *command],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def doc_block(after: str, language: str) -> str:
    """The first ```<language> block of docs/audit-schema.md after the text ``after``."""
    text = DOC.read_text(encoding="utf-8")
    rest = text[text.index(after) :]
    return rest.split(f"```{language}\n", 1)[1].split("```", 1)[0]


@pytest.fixture(scope="module")
def workdir(venv: Venv, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    """A directory holding a log written with a plugin's event types, and the env to use."""
    work = tmp_path_factory.mktemp("offline")
    env = venv.env(PLUGINS)
    # The venv's kerno-otel, the test environment's check-jsonschema, the system's split.
    system = os.environ.get("PATH", "/usr/bin:/bin")
    env["PATH"] = os.pathsep.join(
        [str(venv.python.parent), str(Path(sys.executable).parent), system]
    )
    env["KERNO_AUDIT_FILE_PATH"] = str(work / "log" / "kerno-audit.jsonl")
    done = venv.kerno("run", "--duration", "0.5s", env=env)
    assert done.returncode == 0, done.stderr
    shutil.copy(work / "log" / "kerno-audit.jsonl", work / "kerno-audit.jsonl")
    types = {json.loads(line)["type"] for line in (work / "kerno-audit.jsonl").open()}
    assert {"example.export", "e2e.good", "plugin.error"} <= types
    return work, env


def test_check_jsonschema_takes_the_bundle_offline(workdir: tuple[Path, dict[str, str]]) -> None:
    work, env = workdir
    commands = [
        line.removeprefix("$ ")
        for line in doc_block("[check-jsonschema]", "console").splitlines()
        if line.startswith("$ ")
    ]
    assert commands[-1].startswith("check-jsonschema --schemafile kerno-schemas/bundle.schema.json")
    done = offline(["sh", "-ec", " && ".join(commands)], work, env)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.splitlines()[-1] == "ok -- validation done"
    assert (work / "kerno-schemas" / "example.export.schema.json").is_file()

    # The same lines with one leak: the bundle's leak patterns catch it, offline too.
    lines = (work / "kerno-audit.jsonl").read_text().splitlines()
    record = json.loads(lines[-1])
    record["actor"] = "kerno/start"
    record["details"] = {"plugin": "x", "distribution": "pid=4242", "version": "1", "hooks": []}
    record["type"] = "plugin.load"
    (work / "lines" / "zz-leak.json").write_text(json.dumps(record))
    leaked = offline(
        [
            "check-jsonschema",
            "--schemafile",
            "kerno-schemas/bundle.schema.json",
            "lines/zz-leak.json",
        ],
        work,
        env,
    )
    assert leaked.returncode == 1, leaked.stdout + leaked.stderr
    assert "zz-leak.json::$.details.distribution" in leaked.stdout

    # And the network really is cut: record.schema.json alone needs it, and fails.
    alone = offline(
        [
            "check-jsonschema",
            "--schemafile",
            "kerno-schemas/record.schema.json",
            "lines/zz-leak.json",
        ],
        work,
        env,
    )
    assert alone.returncode != 0
    assert "validation done" not in alone.stdout


@pytest.mark.parametrize("library", ["python-jsonschema", "jsonschema-rs"])
def test_the_python_recipes_take_the_bundle_offline(
    workdir: tuple[Path, dict[str, str]], library: str
) -> None:
    work, env = workdir
    if not (work / "kerno-schemas").is_dir():
        done = offline(["kerno-otel", "schema", "export", "kerno-schemas"], work, env)
        assert done.returncode == 0, done.stderr
    script = work / f"{library}.py"
    script.write_text(doc_block(f"[{library}]", "python"))
    done = offline([sys.executable, str(script), "kerno-audit.jsonl"], work, env)
    assert (done.returncode, done.stdout) == (0, ""), done.stderr
