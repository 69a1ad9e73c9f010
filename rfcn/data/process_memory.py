"""Memory of a process and of its process tree, from Linux ``/proc`` (for the data benchmarks).

RSS counts every resident page a process maps, shared or not; PSS divides each shared page by
the number of processes sharing it, so the PSS of a main process and its forked loader
workers adds up to what they really occupy. ``Private_Dirty`` is what a process wrote itself:
for a forked worker, its own allocations plus the pages it copied on write from its parent.
All values in bytes; NaN where ``/proc`` does not tell (not Linux, or no permission).
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import math
import os
import re
import subprocess
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

__all__ = ["ProcessMemory", "WatchedRun", "descendants", "memory_of", "peak_rss",
           "release_free_heap", "run_watched", "tree_memory"]


@dataclass(frozen=True)
class ProcessMemory:
    """Resident (RSS), proportional (PSS) and private dirty memory of one or more processes."""

    rss: float
    pss: float
    private_dirty: float

    def __add__(self, other: ProcessMemory) -> ProcessMemory:
        return ProcessMemory(self.rss + other.rss, self.pss + other.pss,
                             self.private_dirty + other.private_dirty)

    def __sub__(self, other: ProcessMemory) -> ProcessMemory:
        return ProcessMemory(self.rss - other.rss, self.pss - other.pss,
                             self.private_dirty - other.private_dirty)


_NONE = ProcessMemory(math.nan, math.nan, math.nan)
_FIELDS = {"Rss:": "rss", "Pss:": "pss", "Private_Dirty:": "private_dirty"}


def memory_of(pid: int | str = "self") -> ProcessMemory:
    """RSS, PSS and Private_Dirty of process ``pid`` (from ``/proc/PID/smaps_rollup``)."""
    values: dict[str, float] = {}
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                parts = line.split()
                if parts and parts[0] in _FIELDS:
                    values[_FIELDS[parts[0]]] = float(parts[1]) * 1024  # kB
    except OSError:
        return _NONE
    return ProcessMemory(values.get("rss", math.nan), values.get("pss", math.nan),
                         values.get("private_dirty", math.nan))


def peak_rss(pid: int | str = "self") -> float:
    """Peak RSS (``VmHWM``) of process ``pid`` since it started its program: unlike
    ``getrusage``'s ``ru_maxrss``, it does not carry over the parent's size through a
    fork + exec (spawned processes)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return float(line.split()[1]) * 1024
    except OSError:
        pass
    return math.nan


def _parent_of(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except OSError:
        return None
    # "pid (comm) state ppid ...": comm may hold spaces and parentheses
    fields = stat[stat.rfind(")") + 2:].split()
    return int(fields[1]) if len(fields) > 1 else None


def descendants(pid: int) -> list[int]:
    """Children, grandchildren, ... of ``pid`` that are alive now."""
    try:
        pids = [int(name) for name in os.listdir("/proc") if name.isdigit()]
    except OSError:
        return []
    children: dict[int, list[int]] = {}
    for p in pids:
        parent = _parent_of(p)
        if parent is not None:
            children.setdefault(parent, []).append(p)
    found, todo = [], list(children.get(pid, []))
    while todo:
        p = todo.pop()
        found.append(p)
        todo.extend(children.get(p, []))
    return sorted(found)


def tree_memory(pid: int | None = None) -> tuple[ProcessMemory, dict[int, ProcessMemory]]:
    """(sum over ``pid`` (default: this process) and its descendants, memory of each)."""
    root = os.getpid() if pid is None else pid
    each = {p: memory_of(p) for p in [root, *descendants(root)]}
    total = ProcessMemory(0.0, 0.0, 0.0)
    for m in each.values():
        total = total + m
    return total, each


def release_free_heap() -> None:
    """Give the C heap's free memory back to the OS (glibc ``malloc_trim``; a no-op
    elsewhere). After a large parse is freed, the heap keeps its pages otherwise: they count
    in RSS and in every forked worker's."""
    name = ctypes.util.find_library("c")
    if name is None:
        return
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(name).malloc_trim(0)


@dataclass
class WatchedRun:
    """What `run_watched` saw: exit status, seconds from start to the end and to the first
    output line matching its pattern (NaN: none), the process tree's peak PSS among the
    samples, and the output's last lines."""

    returncode: int
    wall_s: float
    first_match_s: float
    peak_tree_pss: float
    samples: int
    tail: list[str] = field(default_factory=list)


def run_watched(cmd: Sequence[str], pattern: str, *, interval: float = 0.25,
                cwd: str | None = None, env: dict[str, str] | None = None,
                timeout: float = 7200.0) -> WatchedRun:
    """Run `cmd` (stdout and stderr merged), sampling the PSS of its whole process tree
    every `interval` seconds and timing the first output line that matches `pattern`."""
    regex = re.compile(pattern)
    start = time.perf_counter()
    proc = subprocess.Popen(list(cmd), cwd=cwd, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, bufsize=1)
    first = [math.nan]
    tail: list[str] = []

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            if math.isnan(first[0]) and regex.search(line):
                first[0] = time.perf_counter() - start
            tail.append(line.rstrip("\n"))
            del tail[:-40]

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    peak, samples = 0.0, 0
    while proc.poll() is None:
        if time.perf_counter() - start > timeout:
            proc.kill()
            break
        total, _ = tree_memory(proc.pid)
        if not math.isnan(total.pss):
            peak, samples = max(peak, total.pss), samples + 1
        time.sleep(interval)
    proc.wait()
    reader.join(timeout=10)
    return WatchedRun(proc.returncode, time.perf_counter() - start, first[0],
                      peak if samples else math.nan, samples, tail)
