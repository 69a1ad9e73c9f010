"""Report pieces of the benchmarks: times as text, Markdown tables (one of per-stage times)
and the line that says on what the numbers were measured. Everything returns text; the
scripts print it."""

from __future__ import annotations

import datetime
import os
import platform

import numba
import torch
import torchvision


def fmt_s(t: float) -> str:
    """Seconds as "123 ms" (under a second) or "1.23 s"."""
    return f"{t * 1000:.0f} ms" if t < 1 else f"{t:.2f} s"


def table(header: list[str], rows: list[list[str]]) -> str:
    """A Markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def stage_table(columns: list[tuple[str, dict[str, float]]]) -> str:
    """Rows: stages (in first-seen order, "other" and "total" last); one column per model."""
    stages: list[str] = []
    for _, med in columns:
        stages += [k for k in med if k not in stages and k not in ("other", "total")]
    rows = []
    for stage in [*stages, "other", "total"]:
        row = [stage]
        for _, med in columns:
            t, total = med.get(stage, 0.0), med["total"]
            row.append(f"{fmt_s(t)} ({100 * t / total:.0f}%)")
        rows.append(row)
    return table(["stage", *(name for name, _ in columns)], rows)


def environment(device: torch.device) -> str:
    """When and on what: UTC time, machine, cores, load average, library versions and thread
    counts (and the GPU when `device` is CUDA)."""
    load = os.getloadavg() if hasattr(os, "getloadavg") else (float("nan"),) * 3
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    gpu = f", {torch.cuda.get_device_name(device)}" if device.type == "cuda" else ""
    return (
        f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC, "
        f"{platform.machine()} {cores} cores{gpu}, load average "
        f"{load[0]:.2f} {load[1]:.2f} {load[2]:.2f}; torch {torch.__version__} "
        f"(intra-op threads {torch.get_num_threads()}, inter-op "
        f"{torch.get_num_interop_threads()}), torchvision {torchvision.__version__}, "
        f"numba {numba.__version__} (threads {numba.get_num_threads()}){_onnxruntime()}"
    )


def _onnxruntime() -> str:
    try:
        import onnxruntime
    except ImportError:
        return ""
    return f", onnxruntime {onnxruntime.__version__}"
