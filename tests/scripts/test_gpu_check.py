"""scripts/gpu_check.sh on a machine without CUDA: stops at once with a clear message (it
runs the whole GPU check where a GPU is lent; see README)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA machine runs the real check")
def test_gpu_check_fails_clearly_without_cuda(tmp_path: Path) -> None:
    proc = subprocess.run(["bash", str(REPO / "scripts" / "gpu_check.sh"), str(tmp_path / "r")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "no CUDA device" in proc.stderr
    usage = subprocess.run(["bash", str(REPO / "scripts" / "gpu_check.sh")], capture_output=True,
                           text=True, timeout=60)
    assert usage.returncode != 0 and "usage" in usage.stderr
