"""The training loader's workers and the gradients end before the final evaluation (their
memory is free for the evaluator), and not before: hooks of earlier iterations still run
with the loader open."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import torch
from torch import nn

from rfcn.engine.trainer import Trainer, TrainerSettings


class _Toy(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(3, 1)

    def forward(self, images: list[torch.Tensor], targets: list[dict]) -> dict[str, torch.Tensor]:
        y = torch.stack([t["y"] for t in targets])
        return {"loss_mse": ((self.lin(torch.stack(images)).squeeze(1) - y) ** 2).mean()}


class _Loader:
    def __init__(self) -> None:
        self.closed = False

    def __iter__(self):
        g = torch.Generator().manual_seed(0)
        try:
            while True:
                yield SimpleNamespace(images=list(torch.randn(2, 3, generator=g)),
                                      targets=[{"y": torch.randn((), generator=g)}] * 2,
                                      skipped=[])
        finally:
            self.closed = True


class _Watch:
    def __init__(self, loader: _Loader) -> None:
        self.loader, self.seen = loader, []

    def before_train(self, trainer: Trainer) -> None: ...

    def after_train(self, trainer: Trainer) -> None: ...

    def after_step(self, trainer: Trainer, result: object) -> None:
        grads = trainer.model_without_ddp.lin.weight.grad is not None
        self.seen.append((trainer.iteration, self.loader.closed, grads))


def test_loader_closes_before_the_last_iterations_hooks(tmp_path: Path) -> None:
    loader, model = _Loader(), _Toy()
    watch = _Watch(loader)
    trainer = Trainer(model=model, model_without_ddp=model,
                      optimizer=torch.optim.SGD(model.parameters(), lr=0.01),
                      lr_multiplier=lambda it: 1.0, loader_factory=lambda start: loader,
                      device=torch.device("cpu"), output_dir=tmp_path,
                      settings=TrainerSettings(max_iter=3), checkpoint_meta={}, hooks=[watch])
    trainer.train()
    # the final evaluation's hooks run with the loader closed and the gradients freed
    assert watch.seen == [(1, False, True), (2, False, True), (3, True, False)]
