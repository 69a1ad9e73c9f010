"""Issue 13 §3 through tools/eval.py: soft-NMS and test-time augmentation (scales + flip),
in one process and under torchrun (the passes run on every rank, metrics gathered)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from tests.tools.conftest import run_tool

TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
OPTIONS = ["test.box_nms=soft_gaussian", "test.scales=[80,112]", "test.flip=true",
           "num_workers=0", "device=cpu", "analysis=false"]


def test_soft_nms_and_tta_evaluate_the_same_under_ddp(tmp_path: Path, tiny_run: Path) -> None:
    ckpt = tiny_run / "checkpoints" / "last.pt"
    plain = run_tool("eval.py", f"checkpoint={ckpt}", f"hydra.run.dir={tmp_path / 'plain'}",
                     "test.box_nms=nms", "num_workers=0", "device=cpu", "analysis=false",
                     cwd=tmp_path)
    single = run_tool("eval.py", f"checkpoint={ckpt}", f"hydra.run.dir={tmp_path / 'one'}",
                      *OPTIONS, cwd=tmp_path)
    ddp = run_tool("eval.py", f"checkpoint={ckpt}", f"hydra.run.dir={tmp_path / 'two'}",
                   *OPTIONS, cwd=tmp_path, launcher=TORCHRUN)
    for proc in (plain, single, ddp):
        assert proc.returncode == 0, proc.stderr[-3000:]
    assert "test-time augmentation" in single.stdout + single.stderr
    one = json.loads((tmp_path / "one" / "metrics.json").read_text())
    two = json.loads((tmp_path / "two" / "metrics.json").read_text())
    base = json.loads((tmp_path / "plain" / "metrics.json").read_text())
    for key in ("AP", "AP50", "AP75", "per_class", "num_images"):
        assert one[key] == two[key], key
    detections = json.loads((tmp_path / "one" / "detections.json").read_text())
    plain_dets = json.loads((tmp_path / "plain" / "detections.json").read_text())
    assert len(detections) > len(plain_dets)  # soft-NMS keeps overlapping boxes, decayed
    assert base["num_images"] == one["num_images"] == 3
