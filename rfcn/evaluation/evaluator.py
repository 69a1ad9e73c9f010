"""The evaluator interface (reset / process / evaluate), the inference loop that feeds it, and
`evaluate_model`: a model on a dataset (its inference copy, this rank's shard, gathered)."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Iterator
from typing import Any, Protocol

import torch
from torch import Tensor, nn
from tqdm import tqdm

from rfcn.data.loader import build_test_loader
from rfcn.models.inference import inference_copy
from rfcn.utils.distributed import all_gather_object, get_rank, get_world_size, is_main_process

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

    def release(self) -> None:
        """Free what evaluating needed (indices, matching state); metrics stay valid."""
        ...


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
    progress = _Progress(_length(loader))
    try:
        for images, targets in progress.wrap(loader):
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
        progress.close()
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


def evaluate_model(
    model: nn.Module,
    dataset: Any,
    evaluator: DatasetEvaluator,
    device: torch.device,
    num_workers: int,
    autocast_dtype: torch.dtype | None = None,
) -> dict[str, Any]:
    """Metrics of `model` on `dataset` (main process; {} on the others). The model runs as
    its inference copy (BatchNorm folded, channels-last: the same detections, faster)."""
    loader = build_test_loader(dataset, 1, num_workers=num_workers, rank=get_rank(),
                               world_size=get_world_size())
    amp = autocast_dtype if device.type == "cuda" else None
    return inference_on_dataset(inference_copy(model), loader, evaluator, device,
                                autocast_dtype=amp)


def _length(loader: Any) -> int | None:
    try:
        return len(loader)
    except TypeError:
        return None


class _Progress:
    """A tqdm bar on a terminal (main process) and, for log files, a line every
    `log_seconds` with the count, the rate and the time left."""

    def __init__(self, total: int | None, log_seconds: float = 60.0) -> None:
        self.total = total
        self.log_seconds = log_seconds
        self.bar = tqdm(total=total, desc="evaluating", unit="img", leave=False,
                        disable=None if is_main_process() else True)
        self.start = self.last = time.perf_counter()
        self.done = 0

    def wrap(self, loader: Iterable[Any]) -> Iterator[Any]:
        for item in loader:
            yield item
            self.done += 1
            self.bar.update()
            now = time.perf_counter()
            if now - self.last >= self.log_seconds and is_main_process():
                self.last = now
                rate = self.done / (now - self.start)
                left = f", {(self.total - self.done) / rate:.0f}s left" if self.total else ""
                logger.info("evaluating: %d/%s images, %.2f images/s%s", self.done,
                            self.total or "?", rate, left)

    def close(self) -> None:
        self.bar.close()
