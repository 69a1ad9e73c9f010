"""Test-time augmentation: the detector run at several scales and mirrored, the candidates of
every pass merged before the final NMS or soft-NMS, as Deformable-ConvNets' test code merges
its scales.

Shape shorthand: P candidates of one image (all passes), C classes with background, S box
sets (1 class-agnostic, C-1 class-specific).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from rfcn.models.rfcn import RFCN


class TestTimeAugmentation(nn.Module):
    """Wraps an eval-mode RFCN: same calling convention, detections from all passes.

    Args:
        model: the detector.
        scales: shorter sides to run at (the longer side limit scales with them); empty: the
            model's own min_size.
        flip: also run every scale on the horizontally mirrored image.
    """

    __test__ = False  # not a pytest class

    def __init__(self, model: RFCN, scales: Sequence[int] = (), flip: bool = False) -> None:
        super().__init__()
        if any(int(s) < 1 for s in scales):
            raise ValueError(f"test scales must be positive, got {list(scales)}")
        self.model = model
        self.scales = [int(s) for s in scales]
        self.flip = flip

    def forward(self, images: list[Tensor]) -> list[dict[str, Tensor]]:
        transform = self.model.transform
        base_min, base_max = transform.eval_min_size, transform.max_size
        merged: list[list[tuple[Tensor, Tensor, Tensor]]] = [[] for _ in images]
        try:
            for scale in self.scales or [base_min]:
                transform.eval_min_size = scale
                transform.max_size = max(scale, round(base_max * scale / base_min))
                for mirrored in (False, True) if self.flip else (False,):
                    batch = [img.flip(-1) if mirrored else img for img in images]
                    for i, (scores, boxes, valid) in enumerate(self.model.candidates(batch)):
                        if mirrored:
                            width = images[i].shape[-1]
                            boxes = torch.stack([width - boxes[..., 2], boxes[..., 1],
                                                 width - boxes[..., 0], boxes[..., 3]], -1)
                        merged[i].append((scores, boxes, valid))
        finally:
            transform.eval_min_size, transform.max_size = base_min, base_max
        return [self.model.postprocessor.select(
                    *(torch.cat(parts) for parts in zip(*passes, strict=True)))
                for passes in merged]
