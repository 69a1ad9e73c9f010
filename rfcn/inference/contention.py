"""Measuring a tool beside competing work: single-threaded busy processes to run alongside,
and the per-image inference time a tool's log reports (scripts/bench_contention.py)."""

from __future__ import annotations

import contextlib
import re
import subprocess
import sys
from collections.abc import Iterator

__all__ = ["BUSY_LOOP", "competing_processes", "seconds_per_image"]

BUSY_LOOP = "while True:\n    pass\n"
_PER_IMAGE = re.compile(r"inference on (\d+) images took ([\d.]+)s \(([\d.]+)s / image\)")


@contextlib.contextmanager
def competing_processes(count: int) -> Iterator[list[subprocess.Popen]]:
    """`count` single-threaded busy loops (other users' work) for the duration."""
    procs = [subprocess.Popen([sys.executable, "-c", BUSY_LOOP]) for _ in range(count)]
    try:
        yield procs
    finally:
        for p in procs:
            p.kill()
        for p in procs:
            p.wait()


def seconds_per_image(log: str) -> float:
    """The last "inference on N images took Xs (Ys / image)" line of an evaluation log."""
    found = _PER_IMAGE.findall(log)
    if not found:
        raise ValueError("no 'inference on N images took ...' line in the log")
    return float(found[-1][2])
