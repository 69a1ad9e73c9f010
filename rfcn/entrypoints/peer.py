"""`train_peer(cfg)`: torchvision's Faster R-CNN (rfcn.assembly.peer) trained and evaluated by
rfcn's own trainer, loader and evaluator on a training config, for scripts/peer_torchvision.py.

The run is `tools/train.py`'s with the model swapped: the same data, `auto` sizing, solver
(`solver.*`, the peer's learning rate is `solver.base_lr`), schedule, augmentation, seed and
evaluation; the image sizes and anchors come from the R-FCN the config would build. No resume
(a peer run is a measurement).
"""

from __future__ import annotations

import logging
import time
from typing import Any

from rfcn import assembly
from rfcn import config as rc
from rfcn.assembly.peer import build_peer_model
from rfcn.engine.train_loop import StepResult, TrainHook
from rfcn.engine.trainer import Trainer
from rfcn.utils.files import write_json
from rfcn.utils.process import configure_threads, seed_everything, setup_device

__all__ = ["train_peer"]

logger = logging.getLogger(__name__)


class _LoopClock(TrainHook):
    """Seconds of the training iterations alone (no start-up, no evaluation)."""

    def __init__(self) -> None:
        self.start = self.end = time.perf_counter()
        self.first_iteration = 0

    def before_train(self, trainer: Trainer) -> None:
        self.start, self.first_iteration = time.perf_counter(), trainer.iteration

    def after_step(self, trainer: Trainer, result: StepResult) -> None:
        self.end = time.perf_counter()


def train_peer(cfg: Any) -> dict[str, Any]:
    """Train the peer as `cfg` says; returns its final metrics with `wall_s` (construction,
    training and the final evaluation) and `model` (what was trained), also written to the
    output folder's metrics.json."""
    start = time.perf_counter()
    output_dir = rc.resolve_output_dir(cfg)
    device = setup_device(cfg.train.device)
    cfg.train.num_threads = configure_threads(cfg.train.num_threads, cfg.train.num_workers)
    output_dir.mkdir(parents=True, exist_ok=True)
    seed_everything(cfg.train.seed)
    data = assembly.training_data(cfg.dataset)
    assembly.apply_auto_sizing(cfg, data.train)
    num_classes = len(data.class_names)
    spec = assembly.config_spec(cfg.model, num_classes)
    model = build_peer_model(spec, num_classes).to(device)
    logger.info("peer: %s", model.description)
    optimizer, lr_multiplier = assembly.build_solver(cfg.solver, model, cfg.train.max_iter)
    trainer = assembly.build_trainer(cfg, model, optimizer, lr_multiplier, data, device,
                                     output_dir, None, spec=spec)
    clock = _LoopClock()
    trainer.hooks.insert(0, clock)
    metrics = trainer.train()
    steps = max(1, trainer.iteration - clock.first_iteration)
    metrics = {**metrics, "iteration": trainer.iteration, "model": model.description,
               "base_lr": float(cfg.solver.base_lr), "wall_s": time.perf_counter() - start,
               "seconds_per_iteration": (clock.end - clock.start) / steps}
    write_json(output_dir / "metrics.json", metrics)
    return metrics
