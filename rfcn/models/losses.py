"""R-FCN head losses: softmax cross-entropy over the voted class scores, smooth-L1 on boxes.

Shape shorthand in this module:
    R: RoIs over the batch, C: classes including background,
    B: box outputs per RoI (4 class-agnostic, 4C class-specific).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

# torchvision's Fast R-CNN loss uses the same transition point.
SMOOTH_L1_BETA = 1.0 / 9


def per_roi_losses(
    class_logits: Tensor, box_regression: Tensor, labels: Tensor, regression_targets: Tensor
) -> tuple[Tensor, Tensor]:
    """Unreduced losses of every RoI.

    Args:
        class_logits: Tensor[R, C]; box_regression: Tensor[R, B];
        labels: int64 Tensor[R] (0 = background); regression_targets: Tensor[R, 4].

    Returns:
        (classification loss Tensor[R], box loss Tensor[R], zero for background RoIs)
    """
    cls_loss = F.cross_entropy(class_logits, labels, reduction="none")
    num_rois = box_regression.shape[0]
    deltas = box_regression.reshape(num_rois, -1, 4)
    if deltas.shape[1] == 1:  # class-agnostic
        deltas = deltas[:, 0]
    else:
        deltas = deltas[torch.arange(num_rois, device=labels.device), labels]
    box_loss = F.smooth_l1_loss(deltas, regression_targets, beta=SMOOTH_L1_BETA, reduction="none")
    box_loss = box_loss.sum(dim=1) * (labels > 0).to(box_loss.dtype)
    return cls_loss, box_loss


def rfcn_loss(
    class_logits: Tensor,
    box_regression: Tensor,
    labels: Tensor,
    regression_targets: Tensor,
    keep: Tensor | None = None,
) -> dict[str, Tensor]:
    """Mean over the back-propagated RoIs (`keep`, int64 Tensor[K]; None = all).

    The box loss is summed over foreground RoIs and divided by the number of kept RoIs, as in
    torchvision's fastrcnn_loss. Returns {"loss_classifier", "loss_box_reg"} scalars.
    """
    cls_loss, box_loss = per_roi_losses(class_logits, box_regression, labels, regression_targets)
    if keep is not None:
        cls_loss, box_loss = cls_loss[keep], box_loss[keep]
    count = max(cls_loss.numel(), 1)
    return {"loss_classifier": cls_loss.sum() / count, "loss_box_reg": box_loss.sum() / count}
