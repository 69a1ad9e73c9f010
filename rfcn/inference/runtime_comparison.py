"""The runtime comparison of scripts/bench_detector.py: R-FCN and torchvision's Faster R-CNN
through each inference runtime (`rfcn.inference.runtimes`), timed interleaved with
torchvision's model as shipped (`rfcn.inference.timing.interleaved`, CPU), and its report.

int8 is calibrated on training images of the built-in synthetic dataset
(`synthetic_calibration`, by default the cache a default training run makes).
"""

from __future__ import annotations

import os
import statistics
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from rfcn.inference.bench_report import fmt_s, table
from rfcn.inference.exported import Detect
from rfcn.inference.runtimes import KINDS, Runtime, build_all, no_grad_detector, resize_to
from rfcn.inference.timing import interleaved

LABELS = {"rfcn": "rfcn_resnet50", "torchvision": "fasterrcnn_resnet50_fpn"}
# configs/dataset/synthetic.yaml's dataset and cache root: a default training run's cache
SYNTHETIC_ROOT = os.path.join(os.environ.get("RFCN_CACHE_DIR", "~/.cache/rfcn"), "synthetic")
SYNTHETIC_DEFAULTS: dict[str, Any] = {"num_train": 2000, "num_val": 200, "image_size": 256,
                                      "seed": 0}
HEADER = ["runtime", "model", "built in", "detections", "ms / image (median)", "runs",
          "speed-up vs torchvision as shipped", "R-FCN vs torchvision, same runtime"]


def synthetic_calibration(count: int, size: tuple[int, int], root: Path,
                          **dataset_kwargs: Any) -> list[Tensor]:
    """The first `count` training images of the built-in synthetic dataset (generated into
    `root` on first use; `dataset_kwargs` go to ensure_synthetic_dataset), resized to `size`."""
    from rfcn.data import CocoDetection
    from rfcn.data.image_io import to_tensor
    from rfcn.data.synthetic import ensure_synthetic_dataset

    img_dir, ann_file = ensure_synthetic_dataset(root, **dataset_kwargs)["train"]
    dataset = CocoDetection(img_dir, ann_file)
    return [resize_to(to_tensor(dataset.load_image(i)), size)
            for i in range(min(count, len(dataset)))]


@dataclass
class RuntimeComparison:
    """What `compare_runtimes` measured. `times` and `detections` are keyed "shipped"
    (torchvision as shipped) and "<runtime>/<kind>"; `built` and `failed` by (runtime, kind)."""

    runtimes: list[str]
    built: dict[tuple[str, str], Runtime]
    failed: dict[tuple[str, str], str]
    times: dict[str, list[float]]
    detections: dict[str, int]
    threads: int
    size: tuple[int, int]
    calibration_images: int


def compare_runtimes(
    runtimes: list[str], rfcn: nn.Module, torchvision_model: nn.Module, image: Tensor,
    workdir: Path, *, runs: int, warmup: int, calibration: list[Tensor] | None = None,
    compile_scope: str = "convs", compile_mode: str = "default",
) -> RuntimeComparison:
    """Build `rfcn` and `torchvision_model` (eval mode, CPU) through each of `runtimes` (ONNX
    files go to `workdir`; int8 is calibrated on `calibration`, from `synthetic_calibration`)
    and time them on `image`, interleaved with `torchvision_model` as shipped: `warmup`
    untimed and `runs` timed calls each. A runtime that fails to build is recorded, not
    raised. onnxruntime gets torch's intra-op thread count."""
    threads = torch.get_num_threads()
    built, failed = build_all(runtimes, {"rfcn": rfcn, "torchvision": torchvision_model}, image,
                              workdir, threads, calibration, compile_scope, compile_mode)
    detections: dict[str, int] = {}

    def timed(key: str, detect: Detect) -> Callable[[], None]:
        def fn() -> None:
            detections[key] = int(detect([image])[0]["boxes"].shape[0])
        return fn

    fns = {"shipped": timed("shipped", no_grad_detector(torchvision_model))}
    fns.update({f"{name}/{kind}": timed(f"{name}/{kind}", rt.detect)
                for (name, kind), rt in built.items()})
    times = interleaved(fns, runs, warmup, torch.device("cpu"))
    size = (int(image.shape[-2]), int(image.shape[-1]))
    return RuntimeComparison(list(runtimes), built, failed, times, detections, threads, size,
                             len(calibration or []))


def runtime_rows(comparison: RuntimeComparison) -> list[list[str]]:
    """Table rows: torchvision as shipped, then R-FCN and torchvision per runtime."""
    times, detections = comparison.times, comparison.detections
    med = {k: statistics.median(v) for k, v in times.items()}
    shipped = med["shipped"]

    def row(name: str, kind: str, key: str, built_in: str, lead: str) -> list[str]:
        t = med[key]
        return [name, LABELS[kind], built_in, str(detections.get(key, "?")), f"{t * 1000:.0f}",
                " ".join(fmt_s(x) for x in times[key]), f"{shipped / t:.2f}×", lead]

    rows = [row("eager, as shipped", "torchvision", "shipped", "–", "")]
    for name in comparison.runtimes:
        tv_key = f"{name}/torchvision"
        for kind in KINDS:
            key = f"{name}/{kind}"
            if (name, kind) not in comparison.built:
                reason = comparison.failed.get((name, kind), "not built")
                rows.append([name, LABELS[kind], "–", "–", "–", "–", "–", f"not run: {reason}"])
                continue
            lead = "–"
            if kind == "rfcn":
                lead = (f"{med[tv_key] / med[key]:.2f}×" if tv_key in med
                        else "n/a (no torchvision row)")
            rows.append(row(name, kind, key, fmt_s(comparison.built[name, kind].build_seconds),
                            lead))
    return rows


def runtime_report(comparison: RuntimeComparison) -> str:
    """The comparison as Markdown: calibration, the table, threads, how each runtime was
    built and why any did not build."""
    lines = []
    if comparison.calibration_images:
        h, w = comparison.size
        lines.append(f"int8 calibration: {comparison.calibration_images} training images of "
                     f"the synthetic dataset, resized to {h}×{w}.\n")
    lines.append(table(HEADER, runtime_rows(comparison)))
    lines.append(f"\nIntra-op threads: {comparison.threads}, for torch and onnxruntime alike. "
                 "Build times (export, quantisation, compilation with its first call) are not "
                 "in the medians.\n")
    lines += [f"- {name}, {LABELS[kind]}: {rt.how}"
              for (name, kind), rt in comparison.built.items()]
    lines += [f"- {name}, {LABELS[kind]}: NOT RUN, {reason}"
              for (name, kind), reason in comparison.failed.items()]
    if "int8" in comparison.runtimes:
        lines.append("\nint8 changes the detections; its AP against eager on a trained "
                     "checkpoint: scripts/runtime_ap.py.")
    return "\n".join(lines) + "\n"
