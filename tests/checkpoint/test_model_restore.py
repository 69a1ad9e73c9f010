"""How a run's model is rebuilt from its checkpoint (rfcn.assembly): resume keeps the model it
started with, a format-1 checkpoint (no model_spec) rebuilds from its stored config."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import torch

from rfcn import assembly
from rfcn.checkpoint import load_checkpoint
from rfcn.entrypoints.train import train


def test_resume_keeps_the_model_it_started_with(
    tmp_path: Path, synthetic_cache: Path, trained_run: Path, tiny_cfg, caplog
) -> None:
    out = tmp_path / "run"
    shutil.copytree(trained_run, out)
    cfg = tiny_cfg(out, synthetic_cache, "train.resume=true", "model.box_score_thresh=0.3",
                   "model.norm=gn", "train.max_iter=4")
    with caplog.at_level(logging.WARNING, logger="rfcn.assembly"):
        train(cfg)  # one more iteration on the rebuilt model, then its evaluation
    assert "box_score_thresh: 0.05 vs 0.3" in caplog.text, caplog.text
    assert "norm: 'bn' vs 'gn'" in caplog.text, caplog.text
    spec = load_checkpoint(out / "checkpoints" / "last.pt")["model_spec"]
    assert spec["trunk"]["norm"] == "bn" and spec["post"]["box_score_thresh"] == 0.05


def test_format_1_checkpoint_rebuilds_from_its_config(trained_run: Path) -> None:
    ckpt = load_checkpoint(trained_run / "checkpoints" / "last.pt")
    legacy = {k: v for k, v in ckpt.items() if k != "model_spec"}
    model = assembly.restore_model(legacy, "legacy")
    assert model.spec.to_dict() == ckpt["model_spec"]
    for k, v in ckpt["model"].items():
        assert torch.equal(model.state_dict()[k], v), k
