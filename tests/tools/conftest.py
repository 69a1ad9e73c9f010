"""Shared by the command-line tests: run a tool as a user does, and one tiny trained run."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SYNTH = ["dataset.num_train=6", "dataset.num_val=3", "dataset.image_size=128"]
TINY_MODEL = ["model.train_min_sizes=null", "model.aspect_ratios=[0.5,1.0,2.0]",
              "model.min_size=96", "model.max_size=128", "model.k=3", "model.head_dim=32",
              "model.rpn_dim=32", "model.anchor_sizes=[32,64]",
              "model.rpn_pre_nms_top_n_test=100", "model.rpn_post_nms_top_n_test=32",
              "model.rpn_pre_nms_top_n_train=100", "model.rpn_post_nms_top_n_train=32",
              "model.box_batch_size_per_image=16"]
TINY_TRAIN = ["solver.ims_per_batch=2", "train.num_workers=0", "train.num_vis_images=0",
              "train.progress=false"]


def run_tool(tool: str, *args: str, cwd: Path, launcher: list[str] | None = None,
             timeout: float = 400) -> subprocess.CompletedProcess:
    cmd = (launcher or [sys.executable]) + [str(REPO / "tools" / tool), *args]
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 3-iteration run of the tiny model on the tiny synthetic set: its run folder (the
    dataset cache is `<run>/../cache`)."""
    tmp = tmp_path_factory.mktemp("cli-run")
    proc = run_tool("train.py", f"hydra.run.dir={tmp / 'run'}", f"dataset.root={tmp / 'cache'}",
                    *SYNTH, *TINY_MODEL, *TINY_TRAIN, "train.max_iter=3", cwd=tmp)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return tmp / "run"
