"""R-FCN head losses: softmax cross-entropy over the voted class scores, and a box loss:
smooth-L1 on the encoded deltas (the paper's), or an IoU loss on the decoded boxes
(`BoxRegressionLoss`, torchvision.ops' generalized / distance / complete IoU losses).

Shape shorthand in this module:
    R: RoIs over the batch, C: classes including background,
    B: box outputs per RoI (4 class-agnostic, 4C class-specific).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision.models.detection._utils import BoxCoder
from torchvision.ops import complete_box_iou_loss, distance_box_iou_loss, generalized_box_iou_loss

# torchvision's Fast R-CNN loss uses the same transition point.
SMOOTH_L1_BETA = 1.0 / 9
_IOU_LOSSES = {"giou": generalized_box_iou_loss, "diou": distance_box_iou_loss,
               "ciou": complete_box_iou_loss}


class BoxRegressionLoss:
    """Per-RoI box loss of foreground RoIs, times `weight`.

    "smooth_l1": smooth-L1 (beta 1/9) on the deltas, summed over (dx, dy, dw, dh).
    "giou" / "diou" / "ciou": the IoU loss between the boxes that the predicted and the
    target deltas decode to on their proposal (`box_coder`: the head's coder), as detectron2's
    `box_reg_loss_type`; the target deltas decode back to the matched ground-truth box.
    """

    def __init__(self, kind: str = "smooth_l1", box_coder: BoxCoder | None = None,
                 weight: float = 1.0) -> None:
        if kind != "smooth_l1" and kind not in _IOU_LOSSES:
            raise ValueError(f"box_loss must be smooth_l1 or one of {tuple(_IOU_LOSSES)}, "
                             f"got {kind!r}")
        if kind != "smooth_l1" and box_coder is None:
            raise ValueError(f"box_loss={kind!r} decodes boxes and needs the head's box_coder")
        self.kind, self.box_coder, self.weight = kind, box_coder, float(weight)

    def __call__(self, deltas: Tensor, targets: Tensor, proposals: Tensor | None) -> Tensor:
        """deltas, targets: Tensor[F, 4] encoded; proposals: Tensor[F, 4] xyxy -> Tensor[F]."""
        if self.kind == "smooth_l1":
            loss = F.smooth_l1_loss(deltas, targets, beta=SMOOTH_L1_BETA, reduction="none")
            loss = loss.sum(dim=1)
        else:
            if proposals is None:
                raise ValueError(f"box_loss={self.kind!r} needs the RoIs' proposals")
            assert self.box_coder is not None
            pred = self.box_coder.decode_single(deltas, proposals)
            gt = self.box_coder.decode_single(targets.detach(), proposals)
            loss = _IOU_LOSSES[self.kind](pred, gt, reduction="none")
        return loss * self.weight if self.weight != 1.0 else loss


SMOOTH_L1 = BoxRegressionLoss()


def per_roi_losses(
    class_logits: Tensor, box_regression: Tensor, labels: Tensor, regression_targets: Tensor,
    proposals: Tensor | None = None, box_loss: BoxRegressionLoss = SMOOTH_L1,
) -> tuple[Tensor, Tensor]:
    """Unreduced losses of every RoI.

    Args:
        class_logits: Tensor[R, C]; box_regression: Tensor[R, B];
        labels: int64 Tensor[R] (0 = background); regression_targets: Tensor[R, 4];
        proposals: Tensor[R, 4] xyxy, the RoIs (needed by the IoU box losses).

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
    if box_loss.kind == "smooth_l1":  # every RoI, masked: the paper's (and earlier runs') sums
        per_roi = box_loss(deltas, regression_targets, None)
        return cls_loss, per_roi * (labels > 0).to(per_roi.dtype)
    fg = torch.nonzero(labels > 0).squeeze(1)
    per_roi = deltas.new_zeros(num_rois)
    if fg.numel():
        per_roi = per_roi.index_put(
            (fg,), box_loss(deltas[fg], regression_targets[fg],
                            None if proposals is None else proposals[fg]))
    return cls_loss, per_roi


def rfcn_loss(
    class_logits: Tensor,
    box_regression: Tensor,
    labels: Tensor,
    regression_targets: Tensor,
    keep: Tensor | None = None,
    proposals: Tensor | None = None,
    box_loss: BoxRegressionLoss = SMOOTH_L1,
) -> dict[str, Tensor]:
    """Mean over the back-propagated RoIs (`keep`, int64 Tensor[K]; None = all).

    The box loss is summed over foreground RoIs and divided by the number of kept RoIs, as in
    torchvision's fastrcnn_loss. Returns {"loss_classifier", "loss_box_reg"} scalars.
    """
    cls_loss, per_roi_box = per_roi_losses(class_logits, box_regression, labels,
                                           regression_targets, proposals, box_loss)
    if keep is not None:
        cls_loss, per_roi_box = cls_loss[keep], per_roi_box[keep]
    count = max(cls_loss.numel(), 1)
    return {"loss_classifier": cls_loss.sum() / count, "loss_box_reg": per_roi_box.sum() / count}
