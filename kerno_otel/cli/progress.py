"""Progress bars on stderr for long work (``audit validate``, ``audit verify``), or nothing."""

from __future__ import annotations

import io
import os
import stat
import sys
from collections.abc import Callable
from typing import IO, Any, Final

#: Lines between progress refreshes: keeps rich off the hot loop.
EVERY: Final = 4096


def wanted(silent: bool) -> bool:
    """Whether to show progress: on a terminal, unless ``--silent``."""
    return not silent and sys.stderr.isatty()


class Progress:
    """A rich progress bar on stderr, or nothing at all."""

    def __init__(self, enabled: bool) -> None:
        self._bar: Any = None
        self._task: Any = None
        self._raw: IO[bytes] | None = None
        if enabled:
            from rich.console import Console
            from rich.progress import Progress as Bar

            self._bar = Bar(console=Console(stderr=True), transient=True)

    def __enter__(self) -> Progress:
        if self._bar is not None:
            self._bar.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.stop()

    def start(self, name: str, raw: IO[bytes]) -> None:
        """A new bar for one input: by bytes when its size is known, else by lines."""
        if self._bar is None:
            return
        if self._task is not None:
            self._bar.stop_task(self._task)
        try:
            info = os.fstat(raw.fileno())
            total = info.st_size if stat.S_ISREG(info.st_mode) and info.st_size else None
        except (OSError, ValueError, io.UnsupportedOperation):
            total = None
        self._raw = raw if total else None
        self._task = self._bar.add_task(name, total=total)

    def track(self, name: str, total: int) -> None:
        """A bar for work measured in units known up front (verify: bytes of all files)."""
        if self._bar is not None:
            self._task = self._bar.add_task(name, total=total)

    def stage(self, name: str) -> Callable[[int, int], None]:
        """A ``progress(done, total)`` callback for one stage of the work (verify's,
        ``report_of``'s): its bar starts at the first call."""
        started = False

        def advance(done: int, total: int) -> None:
            nonlocal started
            if not started:
                self.track(name, total or 1)
                started = True
            self.advance_to(done)

        return advance

    def advance_to(self, done: int) -> None:
        if self._bar is not None:
            self._bar.update(self._task, completed=done)

    def update(self) -> None:
        if self._bar is None:
            return
        if self._raw is not None:
            self._bar.update(self._task, completed=self._raw.tell())
        else:
            self._bar.update(self._task, advance=EVERY)
