"""The benchmark scripts run end to end (--quick: tiny inputs, one cold run, < 30 s each on an
idle 2-core machine). Only the structure of the report is checked, never timings."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def _run(script: str, *args: str) -> str:
    proc = subprocess.run(
        [sys.executable, str(REPO / "scripts" / script), "--quick", *args],
        capture_output=True, text=True, timeout=240, cwd=REPO,
    )
    assert proc.returncode == 0, f"{script} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc.stdout


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
