"""Online hard example mining (Shrivastava et al. 2016) as used by R-FCN.

Shape shorthand: R: RoIs over the batch, K: RoIs kept.

Every RoI is scored; per image, the RoIs are ranked by their loss, near-duplicates are removed
with NMS (IoU 0.7, the loss as the score, as in the paper) and the `batch_size_per_image` with
the highest loss are back-propagated.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torchvision.ops import batched_nms


def select_hard_examples(
    roi_losses: Tensor, rois: Tensor, batch_size_per_image: int = 128, nms_thresh: float = 0.7
) -> Tensor:
    """Indices of the hard RoIs.

    Args:
        roi_losses: Tensor[R], loss of every RoI (no gradient needed).
        rois: Tensor[R, 5] (batch index, x1, y1, x2, y2).
        batch_size_per_image: how many RoIs each image keeps at most.
        nms_thresh: IoU above which a RoI with a lower loss is dropped; >= 1 disables NMS.

    Returns:
        int64 Tensor[K], sorted by image, then by decreasing loss.
    """
    losses = roi_losses.detach()
    image_idx = rois[:, 0].to(torch.int64)
    if nms_thresh < 1.0:
        order = batched_nms(rois[:, 1:].detach(), losses, image_idx, nms_thresh)
    else:
        order = torch.argsort(losses, descending=True)
    # order is by decreasing loss over the whole batch; regroup per image (stable) and rank.
    grouped = order[torch.argsort(image_idx[order], stable=True)]
    img = image_idx[grouped]
    counts = torch.bincount(img, minlength=int(img.max()) + 1 if img.numel() else 0)
    starts = torch.cumsum(counts, 0) - counts
    rank = torch.arange(len(grouped), device=rois.device) - starts[img]
    return grouped[rank < batch_size_per_image]
