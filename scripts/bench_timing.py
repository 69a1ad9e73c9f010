"""Timing and report helpers of the detector benchmarks: interleaved runs, per-stage timers,
proposal counters, Markdown tables and the environment line.

Import as a sibling module of the scripts (``python scripts/bench_detector.py`` puts scripts/
on the path).
"""

from __future__ import annotations

import datetime
import os
import platform
import statistics
import time
from collections import defaultdict
from collections.abc import Callable
from typing import Any

import numba
import torch
import torchvision
from torch import nn

# ---- timing -----------------------------------------------------------------------------------


class StageTimer:
    """Accumulates wall time per stage name by wrapping callables on instances."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.current: dict[str, float] = defaultdict(float)
        self.history: dict[str, list[float]] = defaultdict(list)

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def wrap(self, obj: Any, attr: str, stage: str) -> None:
        """Replace obj.attr (a bound method or callable) by a timed version of itself."""
        fn = getattr(obj, attr)

        def timed(*args: Any, **kwargs: Any) -> Any:
            self.sync()
            t0 = time.perf_counter()
            out = fn(*args, **kwargs)
            self.sync()
            self.current[stage] += time.perf_counter() - t0
            return out

        setattr(obj, attr, timed)

    def commit(self, total: float) -> None:
        named = sum(self.current.values())
        for k, v in self.current.items():
            self.history[k].append(v)
        self.history["other"].append(max(total - named, 0.0))
        self.history["total"].append(total)
        self.current = defaultdict(float)

    def discard(self) -> None:
        self.current = defaultdict(float)

    def medians(self) -> dict[str, float]:
        return {k: statistics.median(v) for k, v in self.history.items()}


def instrument_rfcn(model: nn.Module, timer: StageTimer) -> None:
    timer.wrap(model.transform, "forward", "transform (normalise, resize)")
    timer.wrap(model.trunk, "forward", "trunk (dilated ResNet)")
    timer.wrap(model.rpn, "forward", "RPN (head, decode, NMS)")
    timer.wrap(model.head, "score_maps", "score maps (1×1 convs)")
    timer.wrap(model.head, "pool_and_vote", "PS RoI pooling + vote")
    timer.wrap(model, "postprocessor", "post-processing")
    timer.wrap(model.transform, "postprocess", "post-processing")


def instrument_torchvision(model: nn.Module, timer: StageTimer) -> None:
    timer.wrap(model.transform, "forward", "transform (normalise, resize)")
    timer.wrap(model.backbone.body, "forward", "trunk (ResNet)")
    timer.wrap(model.backbone.fpn, "forward", "FPN")
    timer.wrap(model.rpn, "forward", "RPN (head, decode, NMS)")
    heads = model.roi_heads
    timer.wrap(heads.box_roi_pool, "forward", "RoIAlign (multi-scale)")
    timer.wrap(heads.box_head, "forward", "box head (2 FC per RoI)")
    timer.wrap(heads.box_predictor, "forward", "box predictor")
    timer.wrap(heads, "postprocess_detections", "post-processing")
    timer.wrap(model.transform, "postprocess", "post-processing")


class ProposalCounter:
    """Records how many proposals the RPN emitted per image (forward hook, read-only)."""

    def __init__(self, rpn: nn.Module) -> None:
        self.counts: list[int] = []
        rpn.register_forward_hook(self._hook)

    def _hook(self, module: nn.Module, inputs: Any, output: Any) -> None:
        self.counts = [int(b.shape[0]) for b in output[0]]


def interleaved(
    fns: dict[str, Callable[[], Any]], runs: int, warmup: int, device: torch.device,
    timers: dict[str, StageTimer] | None = None,
) -> dict[str, list[float]]:
    """Run every fn warmup + runs times, interleaved (A B A B ...); wall times of the timed
    runs. `timers` (name -> StageTimer) commit each timed run and discard each warm-up."""
    times: dict[str, list[float]] = {k: [] for k in fns}
    for i in range(warmup + runs):
        for name, fn in fns.items():
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            t0 = time.perf_counter()
            fn()
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            dt = time.perf_counter() - t0
            timer = (timers or {}).get(name)
            if i >= warmup:
                times[name].append(dt)
                if timer is not None:
                    timer.commit(dt)
            elif timer is not None:
                timer.discard()
    return times


# ---- report -----------------------------------------------------------------------------------


def fmt_s(t: float) -> str:
    return f"{t * 1000:.0f} ms" if t < 1 else f"{t:.2f} s"


def table(header: list[str], rows: list[list[str]]) -> str:
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
