"""scripts/bench_data.py runs end to end (--quick: 300 images, forked measurement processes,
two 2-iteration tools/train.py runs; about 40 s on a 2-core machine). Only the structure of
the report is checked, never timings; the evaluation rows must agree with each other."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_bench_data_quick() -> None:
    proc = subprocess.run([sys.executable, str(REPO / "scripts" / "bench_data.py"), "--quick"],
                          capture_output=True, text=True, timeout=200, cwd=REPO)
    assert proc.returncode == 0, f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    out = proc.stdout
    for heading in ("## Annotation index", "## Copy-on-write", "## Loader",
                    "## COCO evaluation", "## End to end"):
        assert heading in out, heading
    for row in ("| pycocotools.COCO(ann_file) alone |", "| CocoDetection, cold",
                "| CocoDetection, warm", "| dataset.coco (evaluation index",
                "| bare cv2.imread + resize, 1 process |", "| train loader, 0 workers |",
                "| train loader, 1 workers |"):
        assert row in out, row
    assert "uint8" in out and "| 300 | 2,200 |" in out
    assert "largest difference of the 12 COCOeval stats: 0.0e+00" in out
    for row in ("| raw pycocotools", "| rfcn CocoEvaluator", "| cache cold |", "| cache warm |"):
        assert row in out, row
