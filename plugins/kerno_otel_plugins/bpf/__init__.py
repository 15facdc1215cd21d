"""The bpf plugin: six bcc programs on tracepoints, each a doctor source.

``syscall_latency``, ``tcp_monitor``, ``disk_io``, ``sched_delay``, ``fd_track``
and ``oom_track`` (C text in the repository's ``bpf/``, packaged beside this
module in the wheel). The core's loader loads the ones ``bpf.programs``
selects and records each attempt as ``bpf.load``; the source
``bpf.<program>`` reads the loaded program's maps over the doctor's window.
Where a program could not load (not root, bcc missing, no kernel headers,
tracefs not mounted), its source reports its signals absent and says why,
and the doctor's rules use the procfs source's signals instead.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

from kerno_otel import BPFProgram, Config, SourceFactory, hookimpl
from kerno_otel_plugins.bpf._program import BccProgram, Scope, Window
from kerno_otel_plugins.bpf._programs import PROGRAM_TYPES
from kerno_otel_plugins.bpf._source import BPFSource

#: Stable plugin name (the entry point's name).
NAME: Final = "bpf"

#: The programs of this process: the loader loads these objects and the sources read them.
PROGRAMS: Final[dict[str, BccProgram]] = {cls.name: cls() for cls in PROGRAM_TYPES}


def _factory(program: BccProgram) -> SourceFactory:
    def factory(config: Config) -> BPFSource:
        return BPFSource(program, config)

    return factory


@hookimpl
def register_bpf_programs(register: Callable[[str, BPFProgram], None]) -> None:
    for name, program in PROGRAMS.items():
        register(name, program)


@hookimpl
def register_sources(register: Callable[[str, SourceFactory], None]) -> None:
    for name, program in PROGRAMS.items():
        register(f"bpf.{name}", _factory(program))


__all__ = ["NAME", "PROGRAMS", "BPFSource", "BccProgram", "Scope", "Window"]
