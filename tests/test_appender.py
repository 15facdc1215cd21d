"""The writer's file side: a batch lands whole or not at all, per ``on_write_error``.

A short write is made for real, without root: the child process runs under an
``RLIMIT_FSIZE`` just past the file's end, so the kernel writes part of the batch and
then refuses the rest (``EFBIG``, with ``SIGXFSZ`` ignored).
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from kerno_otel.audit.appender import Appender
from kerno_otel.audit.counters import Counters
from kerno_otel.config import AuditConfig

REPO = Path(__file__).resolve().parent.parent

_SHORT_WRITE_CHILD = r"""
import io, os, resource, signal, sys
import orjson
from pathlib import Path
from kerno_otel.audit.appender import Appender
from kerno_otel.audit.counters import Counters
from kerno_otel.config import AuditConfig

live, mode = Path(sys.argv[1]), sys.argv[2]
fd = os.open(live, os.O_WRONLY | os.O_APPEND)
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
limit = os.fstat(fd).st_size + 100
resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
err, drops, codes, counters = io.StringIO(), [], [], Counters()
appender = Appender(
    live, fd, AuditConfig(file_path=str(live), on_write_error=mode), stderr=err,
    counters=counters, exit_process=codes.append, sidecar_fd=None,
    stopping=lambda: True, on_drop=lambda count, reason: drops.append([count, reason]),
)
landed = appender.append(b"".join(b'{"seq":%d}\n' % i for i in range(1, 50)), 49)
small = appender.append(b'{"seq":50}\n', 1)  # what fits still lands after the cut
appender.close()
print(orjson.dumps({"landed": landed, "small": small, "drops": drops, "codes": codes,
                    "dropped": counters.records_dropped, "errors": counters.write_errors,
                    "stderr": err.getvalue()}).decode())
"""


@pytest.mark.parametrize("mode", ["drop", "exit"])
def test_a_short_write_is_cut_back_to_the_last_whole_line(tmp_path: Path, mode: str) -> None:
    live = tmp_path / "kerno-audit.jsonl"
    live.write_bytes(b'{"seq":0}\n')
    child = subprocess.run(
        [sys.executable, "-c", _SHORT_WRITE_CHILD, str(live), mode],
        capture_output=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        timeout=60,
        check=True,
    )
    got = orjson.loads(child.stdout)
    assert live.read_bytes() == b'{"seq":0}\n{"seq":50}\n'  # none of the batch, then the next
    assert (got["landed"], got["small"], got["errors"]) == (False, True, 1)
    message = f"kerno-otel: audit: cannot write to {live}: EFBIG (File too large); "
    if mode == "drop":
        assert (got["drops"], got["codes"]) == ([[49, "EFBIG"]], [])
        assert got["dropped"] == {"write_error": 49}
        assert got["stderr"] == message + "dropped 49 records (on_write_error: drop)\n"
    else:
        assert (got["drops"], got["codes"], got["dropped"]) == ([], [74], {})
        assert got["stderr"] == message + "on_write_error is 'exit': stopping\n"


def test_a_checkpoint_goes_to_its_file_and_a_switch_to_the_new_fd(tmp_path: Path) -> None:
    live, sidecar, rotated = (tmp_path / name for name in ("live", "live.checkpoints", "old"))
    flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT
    counters = Counters()
    appender = Appender(
        live,
        os.open(live, flags, 0o600),
        AuditConfig(file_path=str(live)),
        stderr=io.StringIO(),
        counters=counters,
        exit_process=lambda code: None,
        sidecar_fd=os.open(sidecar, flags, 0o600),
        stopping=lambda: False,
        on_drop=lambda count, reason: None,
    )
    assert appender.append(b"a\n", 1)
    appender.append_checkpoint(b'{"seq":0}')
    live.rename(rotated)
    appender.switch(os.open(live, flags, 0o600))
    assert appender.append(b"b\n", 1)
    appender.close()
    assert (rotated.read_bytes(), live.read_bytes()) == (b"a\n", b"b\n")
    assert sidecar.read_bytes() == b'{"seq":0}\n'
    assert counters.fsyncs == 2 and counters.write_errors == 0  # the checkpoint, the switch
