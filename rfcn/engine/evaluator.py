"""The evaluator interface (reset / process / evaluate) and the inference loop that feeds it."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from typing import Any, Protocol

import torch
from torch import Tensor, nn

from rfcn.engine.distributed import all_gather_object

logger = logging.getLogger(__name__)


class DatasetEvaluator(Protocol):
    """Accumulates per-image predictions, then computes metrics.

    `process(targets, outputs)` receives the loader's targets and the model's eval outputs
    for the same images (lists of equal length). `evaluate()` gathers across ranks when a
    process group is initialised and returns the metrics on the main process (an empty dict
    elsewhere).
    """

    def reset(self) -> None: ...

    def process(self, targets: list[dict[str, Any]], outputs: list[dict[str, Tensor]]) -> None: ...

    def evaluate(self) -> dict[str, Any]: ...


@torch.no_grad()
def inference_on_dataset(
    model: nn.Module,
    loader: Iterable[tuple[list[Tensor], list[dict[str, Any]]]],
    evaluator: DatasetEvaluator,
    device: torch.device,
    *,
    autocast_dtype: torch.dtype | None = None,
) -> dict[str, Any]:
    """Run `model` (eval mode) over `loader` and return `evaluator.evaluate()`.

    The model's training flag is restored afterwards. Outputs are moved to the CPU before
    they reach the evaluator.
    """
    was_training = model.training
    model.eval()
    evaluator.reset()
    start = time.perf_counter()
    num_images = 0
    try:
        for images, targets in loader:
            images = [img.to(device, non_blocking=True) for img in images]
            if autocast_dtype is not None:
                with torch.autocast(device.type, dtype=autocast_dtype):
                    outputs = model(images)
            else:
                outputs = model(images)
            outputs = [
                {
                    k: v.detach().float().cpu() if v.is_floating_point() else v.cpu()
                    for k, v in out.items()
                }
                for out in outputs
            ]
            evaluator.process(targets, outputs)
            num_images += len(images)
    finally:
        model.train(was_training)
    elapsed = time.perf_counter() - start
    total = sum(all_gather_object(num_images))
    if total == 0:
        raise RuntimeError(
            "evaluation: no image of the dataset could be read (see the warnings above for "
            "each unreadable file); nothing to evaluate"
        )
    logger.info(
        "inference on %d images took %.1fs (%.3fs / image)",
        num_images,
        elapsed,
        elapsed / max(num_images, 1),
    )
    return evaluator.evaluate()
