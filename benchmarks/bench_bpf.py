"""What the six BPF programs cost a workload, next to the cost of tracing at all, in one run.

    sudo .venv/bin/python benchmarks/bench_bpf.py [--repeats 3] [--tiny]

Three conditions, interleaved --repeats times: nothing attached (the baseline);
the floor, an empty program on each of the same eleven tracepoints (the cost of
tracing at all: the kernel's tracepoint and BPF entry, which no program can
avoid); and the six programs as the bpf plugin loads them. Two workloads:

- the mix: tar+gzip of a source tree, ``find`` over /usr, and a loopback HTTP
  load (a threading HTTP server and a client opening a connection per request);
- the storm: ``dd bs=1`` from /dev/zero to /dev/null (two syscalls a byte).

A workload's cost is the CPU time (user + system) of its processes, which is
where a tracepoint program's time is charged: on a machine shared with other
work that is steadier than wall time (also printed). The slowdown of a
condition is the median, over repeats, of its cost over the same repeat's
baseline, in percent (the order of the conditions turns every repeat). Needs root and
bcc (scripts/setup-bpf.sh). The last line printed is one JSON object; the goal
is ``mix_overhead_pct - mix_floor_pct <= 10``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kerno_otel_plugins.bpf._host import unavailable
from kerno_otel_plugins.bpf._programs import PROGRAM_TYPES

HTTP_SERVER = """
import http.server, sys
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = b"x" * 2048
        self.send_response(200); self.send_header("Content-Length", str(len(body)))
        self.end_headers(); self.wfile.write(body)
    def log_message(self, *a): pass
s = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
print(s.server_address[1], flush=True)
s.serve_forever()
"""
HTTP_CLIENT = """
import http.client, sys
port, n = int(sys.argv[1]), int(sys.argv[2])
for _ in range(n):
    c = http.client.HTTPConnection("127.0.0.1", port); c.request("GET", "/"); c.getresponse().read()
    c.close()
"""


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def measured(run: Callable[[], None]) -> tuple[float, float]:
    """(CPU seconds of the processes ``run`` waited for, wall seconds)."""
    cpu, wall = children_cpu(), time.perf_counter()
    run()
    return children_cpu() - cpu, time.perf_counter() - wall


class Workloads:
    def __init__(self, tiny: bool, scratch: Path) -> None:
        self.tiny = tiny
        self.scratch = scratch
        default_tree = Path("/usr/lib/python3.11")
        here = Path(__file__).resolve().parent.parent / "kerno_otel"
        self.tree = here if tiny or not default_tree.is_dir() else default_tree
        self.find_root = "/usr/share/doc" if tiny else "/usr"
        self.requests = 20 if tiny else 1500
        self.storm_bytes = 20_000 if tiny else 2_000_000

    def tar(self) -> None:
        out = self.scratch / "tree.tar.gz"
        subprocess.run(
            ["tar", "czf", str(out), "-C", str(self.tree.parent), self.tree.name],
            check=True,
            stderr=subprocess.DEVNULL,
        )

    def find(self) -> None:
        subprocess.run(
            ["find", self.find_root, "-type", "f"],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def http(self) -> None:
        server = subprocess.Popen(
            [sys.executable, "-c", HTTP_SERVER], stdout=subprocess.PIPE, text=True
        )
        try:
            assert server.stdout is not None
            port = server.stdout.readline().strip()
            subprocess.run(
                [sys.executable, "-c", HTTP_CLIENT, port, str(self.requests)], check=True
            )
        finally:
            server.terminate()
            server.wait(10)

    def storm(self) -> None:
        subprocess.run(
            [
                "dd",
                "if=/dev/zero",
                "of=/dev/null",
                "bs=1",
                f"count={self.storm_bytes}",
                "status=none",
            ],
            check=True,
        )


def floor_text() -> str:
    """An empty program on every tracepoint the six attach to."""
    probes = []
    for cls in PROGRAM_TYPES:
        for tracepoint in cls.tracepoints:
            category, event = tracepoint.split(":")
            probes.append(f"TRACEPOINT_PROBE({category}, {event}) {{ return 0; }}\n")
    return "".join(probes)


class Condition:
    def __init__(self, name: str) -> None:
        self.name = name
        self.attached: list[Any] = []

    def attach(self) -> None:
        if self.name == "floor":
            from bcc import BPF

            self.attached = [BPF(text=floor_text().encode())]
        elif self.name == "programs":
            programs = [cls() for cls in PROGRAM_TYPES]
            for program in programs:
                program.load()
            self.attached = programs

    def detach(self) -> None:
        for thing in self.attached:
            if hasattr(thing, "close"):
                thing.close()
            else:
                thing.cleanup()
        self.attached = []


def pct(cost: float, base: float) -> float:
    return round((cost / base - 1.0) * 100.0, 1) if base > 0 else 0.0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--tiny", action="store_true", help="a few-second smoke run")
    args = parser.parse_args(argv)
    reason = unavailable()
    if reason is not None:
        print(f"bench_bpf: BPF cannot load here: {reason}", file=sys.stderr)
        return 2
    conditions = [Condition("baseline"), Condition("floor"), Condition("programs")]
    cpu: dict[tuple[str, str], list[float]] = {}
    wall: dict[tuple[str, str], list[float]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-bpf-") as scratch:
        work = Workloads(args.tiny, Path(scratch))
        parts = (("tar", work.tar), ("find", work.find), ("http", work.http))
        for _, run in parts:  # warm the page cache: every condition reads files from memory
            run()
        for repeat in range(args.repeats):
            # The order turns every repeat, so a machine slowly getting busier (other
            # work starting) does not always land on the same condition.
            shift = repeat % len(conditions)
            for condition in conditions[shift:] + conditions[:shift]:
                condition.attach()
                try:
                    for load, run in (*parts, ("storm", work.storm)):
                        c, w = measured(run)
                        cpu.setdefault((condition.name, load), []).append(c)
                        wall.setdefault((condition.name, load), []).append(w)
                finally:
                    condition.detach()
                for kind in (cpu, wall):  # the mix is its three parts together
                    kind.setdefault((condition.name, "mix"), []).append(
                        sum(kind[(condition.name, part)][-1] for part, _ in parts)
                    )
                print(
                    f"repeat {repeat + 1}/{args.repeats} {condition.name:9s} "
                    f"mix {cpu[(condition.name, 'mix')][-1]:.3f} s cpu "
                    f"({wall[(condition.name, 'mix')][-1]:.3f} s wall), "
                    f"storm {cpu[(condition.name, 'storm')][-1]:.3f} s cpu "
                    f"({wall[(condition.name, 'storm')][-1]:.3f} s wall)",
                    file=sys.stderr,
                )

    def slowdown(kind: dict[tuple[str, str], list[float]], condition: str, load: str) -> float:
        """Median over repeats of the condition's cost over the same repeat's baseline."""
        pairs = zip(kind[(condition, load)], kind[("baseline", load)], strict=True)
        return pct(statistics.median(c / b for c, b in pairs if b > 0), 1.0)

    result: dict[str, Any] = {
        "repeats": args.repeats,
        "mix_baseline_cpu_s": round(statistics.median(cpu[("baseline", "mix")]), 3),
        "storm_baseline_cpu_s": round(statistics.median(cpu[("baseline", "storm")]), 3),
    }
    for load in ("mix", "storm"):
        result[f"{load}_floor_pct"] = slowdown(cpu, "floor", load)
        result[f"{load}_overhead_pct"] = slowdown(cpu, "programs", load)
    for load in ("mix", "storm"):
        result[f"{load}_floor_wall_pct"] = slowdown(wall, "floor", load)
        result[f"{load}_overhead_wall_pct"] = slowdown(wall, "programs", load)
    result["mix_above_floor_pp"] = round(result["mix_overhead_pct"] - result["mix_floor_pct"], 1)
    for part, _ in parts:
        result[f"{part}_floor_pct"] = slowdown(cpu, "floor", part)
        result[f"{part}_overhead_pct"] = slowdown(cpu, "programs", part)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONDONTWRITEBYTECODE", "1")
    sys.exit(main())
