"""Timing inference: interleaved runs (A B A B ...: a change of machine load hits every
runner alike), per-stage timers wrapped around a detector's submodules, the RPN's proposal
counts, and the median throughput of one model: the one timing loop of tools/benchmark.py and
the benchmark scripts."""

from __future__ import annotations

import statistics
import time
from collections import defaultdict
from collections.abc import Callable
from typing import Any

import torch
from torch import nn


def synchronize(device: torch.device) -> None:
    """Wait for the queued kernels of `device` (CUDA; a no-op elsewhere) before reading a clock."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class StageTimer:
    """Accumulates wall time per stage name by wrapping callables on instances."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.current: dict[str, float] = defaultdict(float)
        self.history: dict[str, list[float]] = defaultdict(list)

    def wrap(self, obj: Any, attr: str, stage: str) -> None:
        """Replace obj.attr (a bound method or callable) by a timed version of itself."""
        fn = getattr(obj, attr)

        def timed(*args: Any, **kwargs: Any) -> Any:
            synchronize(self.device)
            t0 = time.perf_counter()
            out = fn(*args, **kwargs)
            synchronize(self.device)
            self.current[stage] += time.perf_counter() - t0
            return out

        setattr(obj, attr, timed)

    def commit(self, total: float) -> None:
        """Close a timed run of `total` seconds: its stages, "other" (the rest) and "total"."""
        named = sum(self.current.values())
        for k, v in self.current.items():
            self.history[k].append(v)
        self.history["other"].append(max(total - named, 0.0))
        self.history["total"].append(total)
        self.current = defaultdict(float)

    def discard(self) -> None:
        """Forget the stages of an untimed (warm-up) run."""
        self.current = defaultdict(float)

    def medians(self) -> dict[str, float]:
        """Median seconds per stage over the committed runs."""
        return {k: statistics.median(v) for k, v in self.history.items()}


def instrument_rfcn(model: nn.Module, timer: StageTimer) -> None:
    """Time an R-FCN's stages (transform, trunk, RPN, score maps, PS pooling + vote,
    post-processing) into `timer`; the outputs do not change."""
    timer.wrap(model.transform, "forward", "transform (normalise, resize)")
    timer.wrap(model.trunk, "forward", "trunk (dilated ResNet)")
    timer.wrap(model.rpn, "forward", "RPN (head, decode, NMS)")
    timer.wrap(model.head, "score_maps", "score maps (1×1 convs)")
    timer.wrap(model.head, "pool_and_vote", "PS RoI pooling + vote")
    timer.wrap(model, "postprocessor", "post-processing")
    timer.wrap(model.transform, "postprocess", "post-processing")


def instrument_torchvision(model: nn.Module, timer: StageTimer) -> None:
    """Time the stages of torchvision's Faster R-CNN FPN into `timer`."""
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
            synchronize(device)
            t0 = time.perf_counter()
            fn()
            synchronize(device)
            dt = time.perf_counter() - t0
            timer = (timers or {}).get(name)
            if i >= warmup:
                times[name].append(dt)
                if timer is not None:
                    timer.commit(dt)
            elif timer is not None:
                timer.discard()
    return times


@torch.no_grad()
def measure_throughput(
    model: nn.Module, image: torch.Tensor, device: torch.device, runs: int = 10,
    warmup: int = 2,
) -> dict[str, float]:
    """Median seconds per image and images/s of eval-mode inference on `device`."""
    model.eval()
    image = image.to(device)
    times = interleaved({"model": lambda: model([image])}, runs, warmup, device)["model"]
    median = statistics.median(times)
    return {"seconds_per_image": median, "images_per_second": 1.0 / median, "runs": runs}
