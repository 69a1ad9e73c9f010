"""Issue 15 §3, §5, §6: best.pt by a chosen metric, early stopping, curves.png, and a learning
rate that follows the batch; resume keeps best / patience and stays bit-exact."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import cv2
import pytest
import torch

from rfcn import assembly
from rfcn.checkpoint import load_checkpoint
from rfcn.engine.hooks import BestCheckpointHook
from rfcn.entrypoints.train import train


class _FakeTrainer:
    """What BestCheckpointHook reads and calls, with scripted evaluations."""

    def __init__(self, max_iter: int) -> None:
        self.iteration, self.metrics, self.stop_reason = 0, {}, None
        self.max_iter = max_iter
        self.saved: list[int] = []

    @property
    def last_step(self) -> bool:
        return self.iteration >= self.max_iter or self.stop_reason is not None

    def save(self, path: Path) -> None:
        self.saved.append(self.iteration)


def _run(values: list[float], patience: int) -> tuple[_FakeTrainer, BestCheckpointHook]:
    trainer = _FakeTrainer(max_iter=len(values))
    eval_hook = SimpleNamespace(last_iteration=None)
    hook = BestCheckpointHook("AP50", patience, eval_hook, Path("best.pt"))
    for v in values:
        trainer.iteration += 1
        trainer.metrics = {"AP50": v, "AP": v / 2}
        eval_hook.last_iteration = trainer.iteration
        hook.after_step(trainer, None)
        if trainer.stop_reason:
            break
    return trainer, hook


def test_best_is_kept_and_patience_stops() -> None:
    trainer, hook = _run([0.1, 0.3, 0.2, 0.25, 0.5], patience=2)
    assert trainer.saved == [1, 2]  # improvements only
    assert trainer.iteration == 4 and "did not improve for 2 evaluations" in trainer.stop_reason
    assert hook.summary() == {"metric": "AP50", "value": 0.3, "iteration": 2,
                              "checkpoint": "best.pt"}
    trainer, _ = _run([0.1, 0.3, 0.2, 0.25, 0.5], patience=0)  # never stops
    assert trainer.saved == [1, 2, 5] and trainer.stop_reason is None


def test_best_state_survives_a_resume() -> None:
    _, hook = _run([0.1, 0.3, 0.2], patience=3)
    again = BestCheckpointHook("AP50", 3, SimpleNamespace(last_iteration=None), Path("b"))
    again.load_state_dict(hook.state_dict())
    assert (again.best, again.best_iteration, again.bad_evals) == (0.3, 2, 1)


def test_unknown_metric_is_refused(tmp_path: Path, synthetic_cache: Path, tiny_cfg) -> None:
    with pytest.raises(ValueError, match="best_metric"):
        train(tiny_cfg(tmp_path, synthetic_cache, "train.eval_period=1", "train.best_metric=mAP"))


def test_reference_batch_scales_the_learning_rate(compose) -> None:
    cfg = compose("train", ["solver.base_lr=0.01", "solver.ims_per_batch=4",
                            "solver.reference_batch=16"])
    assert assembly.scaled_lr(cfg.solver, world_size=2) == pytest.approx(0.005)
    model = torch.nn.Linear(2, 2)
    optimizer, _ = assembly.build_solver(cfg.solver, model, 10, world_size=8)
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.02)
    off = compose("train", ["solver.base_lr=0.01"])
    assert assembly.scaled_lr(off.solver, world_size=8) == 0.01  # off by default


def test_best_checkpoint_and_curves_resume_bit_exact(
    tmp_path: Path, synthetic_cache: Path, tiny_cfg
) -> None:
    """4 iterations evaluating every one == 2 iterations, then resumed to 4 (the warm-up
    covers the first two, so their learning rate does not depend on max_iter)."""
    extra = ["train.eval_period=1", "train.best_metric=AP50", "train.num_vis_images=0"]
    straight, split = tmp_path / "straight", tmp_path / "split"
    train(tiny_cfg(straight, synthetic_cache, *extra, "train.max_iter=4"))
    train(tiny_cfg(split, synthetic_cache, *extra, "train.max_iter=2"))
    resumed = train(tiny_cfg(split, synthetic_cache, *extra, "train.max_iter=4",
                             "train.resume=true"))
    want = json.loads((straight / "metrics.json").read_text())
    assert resumed["best"] == {**want["best"], "checkpoint": str(split / "checkpoints" /
                                                                  "best.pt")}
    a = load_checkpoint(straight / "checkpoints" / "last.pt")
    b = load_checkpoint(split / "checkpoints" / "last.pt")
    for k, v in a["model"].items():
        assert torch.equal(v, b["model"][k]), k
    assert a["hooks"]["BestCheckpointHook"] == b["hooks"]["BestCheckpointHook"]
    best = load_checkpoint(straight / "checkpoints" / "best.pt")
    assert best["iteration"] == want["best"]["iteration"]
    curves = cv2.imread(str(split / "curves.png"))
    assert curves is not None and curves.shape[0] > 100
    # the resumed run's curves hold the iterations before the resume too
    history = b["hooks"]["LogHook"]["scalars"]
    assert [s for s, _ in history["eval/AP50"]] == [1, 2, 3, 4]


def test_early_stopping_ends_the_run_cleanly(
    tmp_path: Path, synthetic_cache: Path, tiny_cfg
) -> None:
    """A tiny model's AP50 does not move in the first iterations: patience 1 stops the run at
    the second evaluation, with last.pt, best.pt and metrics.json saying why."""
    metrics = train(tiny_cfg(tmp_path, synthetic_cache, "train.eval_period=1",
                             "train.best_metric=AP50", "train.early_stop_patience=1",
                             "train.max_iter=8", "train.num_vis_images=0"))
    written = json.loads((tmp_path / "metrics.json").read_text())
    assert written["iteration"] < 8 and "early stopping: AP50" in written["stopped_early"]
    assert metrics["stopped_early"] == written["stopped_early"]
    assert load_checkpoint(tmp_path / "checkpoints" / "last.pt")["iteration"] == \
        written["iteration"]
    assert (tmp_path / "checkpoints" / "best.pt").is_file()
