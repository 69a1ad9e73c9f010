"""The command-line tools, run as a user runs them (subprocesses, real Hydra CLI)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[2]

TINY = [
    "dataset.num_train=6",
    "dataset.num_val=3",
    "dataset.image_size=192",
    "model.min_size=96",
    "model.max_size=96",
    "model.k=3",
    "model.head_dim=32",
    "model.rpn_dim=32",
    "model.anchor_sizes=[32,64]",
    "model.rpn_pre_nms_top_n_train=100",
    "model.rpn_post_nms_top_n_train=32",
    "model.rpn_pre_nms_top_n_test=100",
    "model.rpn_post_nms_top_n_test=32",
    "model.box_batch_size_per_image=16",
    "solver.ims_per_batch=2",
    "train.num_workers=0",
    "train.num_vis_images=0",
    "train.progress=false",
]


def _run(tool: str, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(REPO / "tools" / tool), *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_train_eval_infer_cli(tmp_path: Path) -> None:
    run = tmp_path / "run"
    cache = tmp_path / "cache"
    proc = _run(
        "train.py",
        f"hydra.run.dir={run}",
        f"dataset.root={cache}",
        *TINY,
        "train.max_iter=2",
        "train.checkpoint_period=1",
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "AP50" in proc.stdout  # the COCO AP table
    assert (run / "metrics.json").is_file() and (run / "checkpoints" / "last.pt").is_file()
    trained = json.loads((run / "metrics.json").read_text())

    evaluated = tmp_path / "eval"
    proc = _run(
        "eval.py",
        f"checkpoint={run / 'checkpoints' / 'last.pt'}",
        f"hydra.run.dir={evaluated}",
        "num_workers=0",
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads((evaluated / "metrics.json").read_text())["AP"] == trained["AP"]
    assert (evaluated / "detections.json").is_file()

    images = next(cache.glob("synthetic-*")) / "val"
    out = tmp_path / "infer"
    proc = _run(
        "infer.py",
        f"checkpoint={run / 'checkpoints' / 'last.pt'}",
        f"input={images}",
        f"output={out}",
        "score_thresh=0.0",
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    records = json.loads((out / "detections.json").read_text())
    assert len(records) == 3
    assert {p.name for p in out.glob("*.jpg")} == {p.name for p in images.glob("*.jpg")}


def test_train_cli_misspelt_key_fails_fast(tmp_path: Path) -> None:
    proc = _run("train.py", "train.max_itr=3", cwd=tmp_path)
    assert proc.returncode != 0
    assert "max_itr" in proc.stderr


def test_train_cli_diverging_lr_exits_nonzero(tmp_path: Path) -> None:
    run = tmp_path / "run"
    proc = _run(
        "train.py",
        f"hydra.run.dir={run}",
        f"dataset.root={tmp_path / 'cache'}",
        *TINY,
        "train.max_iter=30",
        "train.checkpoint_period=1",
        "train.max_nonfinite_steps=2",
        "solver.base_lr=1e6",
        "solver.warmup_iters=0",
        cwd=tmp_path,
    )
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert "consecutive non-finite or exploding" in proc.stderr or "not finite" in proc.stderr
    assert "checkpoint" in proc.stderr
    last = run / "checkpoints" / "last.pt"
    if last.exists():  # whatever was written holds finite weights
        state = torch.load(last, weights_only=True)["model"]
        assert all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point())
