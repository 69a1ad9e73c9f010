"""The benchmark scripts run end to end (--quick: tiny inputs, one cold run, < 30 s each on an
idle 2-core machine). Only the structure of the report is checked, never timings.

The runtime table (--runtime compile/onnxruntime/int8) exports and compiles R-50 models even
with --quick (about 2 min on a 2-core machine): the subprocess run of every runtime is marked
slow; the default run checks the same section in-process on tiny models."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn
from torchvision.models.detection import FasterRCNN
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.ops import MultiScaleRoIAlign

REPO = Path(__file__).resolve().parents[2]


def _run(script: str, *args: str) -> str:
    proc = subprocess.run(
        [sys.executable, str(REPO / "scripts" / script), "--quick", *args],
        capture_output=True, text=True, timeout=240, cwd=REPO,
    )
    assert proc.returncode == 0, f"{script} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc.stdout


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_bench_detector_quick() -> None:
    out = _run("bench_detector.py")
    for heading in ("## Inference: R-FCN R-50 vs torchvision", "## Cost curve",
                    "## Per-stage breakdown", "## Training step"):
        assert heading in out
    assert "Goal R-FCN ≥ 2.0× faster:" in out
    assert "| PS RoI pooling + vote |" in out and "| post-processing |" in out
    assert "| rfcn_resnet50 |" in out


@pytest.mark.timeout(300)
def test_bench_train_quick() -> None:
    out = _run("bench_train.py")
    assert "images / s" in out and "loader share of step time" in out
    assert "Loader bottleneck:" in out
    assert "| DataLoader workers" in out


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_bench_detector_quick_every_runtime() -> None:
    out = _run("bench_detector.py", "--runtime", "eager", "compile", "onnxruntime", "int8")
    assert "## Inference: R-FCN R-50 vs torchvision" in out and "## Training step" in out
    assert "## Inference runtimes (CPU)" in out
    for runtime in ("eager", "compile", "onnxruntime", "int8"):
        assert f"| {runtime} | rfcn_resnet50 |" in out
    assert "NOT RUN" not in out and "not run:" not in out


def _tiny_faster_rcnn() -> nn.Module:
    """torchvision's FasterRCNN on a two-conv backbone: the TorchScript export takes seconds."""
    torch.manual_seed(0)
    backbone = nn.Sequential(nn.Conv2d(3, 8, 3, stride=4, padding=1), nn.ReLU(),
                             nn.Conv2d(8, 16, 3, stride=4, padding=1), nn.ReLU())
    backbone.out_channels = 16
    anchors = AnchorGenerator(sizes=((16, 32),), aspect_ratios=((0.5, 1.0, 2.0),))
    return FasterRCNN(backbone, num_classes=4, min_size=64, max_size=96,
                      rpn_anchor_generator=anchors,
                      box_roi_pool=MultiScaleRoIAlign(["0"], 7, 2),
                      rpn_post_nms_top_n_test=50, box_score_thresh=0.0).eval()


@pytest.mark.timeout(300)
def test_runtime_section_on_tiny_models(tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    """The runtime table of bench_detector.py (rfcn.inference.runtime_comparison): eager,
    onnxruntime (R-FCN through export_onnx, torchvision through the TorchScript exporter) and
    int8 (calibrated on synthetic images) all build and run, with a speed-up and the R-FCN /
    torchvision ratio per runtime."""
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    from rfcn.inference.runtime_comparison import (
        compare_runtimes,
        runtime_report,
        synthetic_calibration,
    )
    from tests.export.conftest import tiny_detector

    args = argparse.Namespace(runtime=["eager", "onnxruntime", "int8"], runs=1, warmup=0,
                              compile_scope="convs", compile_mode="default",
                              calibration_images=2)
    image = torch.rand(3, 64, 80, generator=torch.Generator().manual_seed(0))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:  # what bench_detector.py --quick does, on tiny models
        calibration = synthetic_calibration(args.calibration_images, (64, 80),
                                            tmp_path / "synthetic", num_train=2, num_val=1,
                                            image_size=64)
        comparison = compare_runtimes(
            args.runtime, tiny_detector("pool"), _tiny_faster_rcnn(), image, tmp_path,
            runs=args.runs, warmup=args.warmup, calibration=calibration,
            compile_scope=args.compile_scope, compile_mode=args.compile_mode)
        print(runtime_report(comparison))
    finally:
        torch.set_num_threads(threads)
    out = capsys.readouterr().out
    assert "int8 calibration: 2 training images" in out
    assert "| eager, as shipped | fasterrcnn_resnet50_fpn |" in out
    rows = [line for line in out.splitlines() if line.startswith("| ")]
    for runtime in args.runtime:
        rfcn = next(r for r in rows if r.startswith(f"| {runtime} | rfcn_resnet50 |"))
        cells = [c.strip() for c in rfcn.strip("|").split("|")]
        assert cells[-2].endswith("×") and cells[-1].endswith("×"), rfcn
        assert any(r.startswith(f"| {runtime} | fasterrcnn_resnet50_fpn |") for r in rows)
    assert "not run" not in out and "NOT RUN" not in out
    assert "TorchScript trace" in out and "quantize_onnx" in out
