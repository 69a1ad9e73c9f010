"""Training targets for the R-FCN head: match proposals (plus ground truth) to boxes.

Shape shorthand in this module:
    N: images, P: proposals of one image, M: ground-truth boxes of one image,
    R: RoIs over the batch, C: classes including background.

Foreground: IoU ≥ fg_iou_thresh (0.5); background: IoU < bg_iou_thresh (0.5), as in the paper
([0, 0.5)). With OHEM every RoI is kept (the loss picks the hard ones); without it a balanced
sample of `batch_size_per_image` RoIs at `positive_fraction` foreground is drawn.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor
from torchvision.models.detection._utils import BalancedPositiveNegativeSampler, BoxCoder, Matcher
from torchvision.ops import box_iou


@dataclass
class RoITargets:
    """RoIs of the whole batch with their targets.

    rois: Tensor[R, 5] (batch index, x1, y1, x2, y2); labels: int64 Tensor[R] (0 = background);
    regression_targets: Tensor[R, 4] encoded deltas of the matched box (zeros for background).
    """

    rois: Tensor
    labels: Tensor
    regression_targets: Tensor


class RoITargetAssigner:
    """Match proposals to ground truth, optionally subsample, encode box targets.

    Args:
        box_coder: encodes (dx, dy, dw, dh) with R-FCN's weights (10, 10, 5, 5).
        fg_iou_thresh, bg_iou_thresh: foreground from fg_iou_thresh, background below
            bg_iou_thresh; in between ignored (empty with the defaults 0.5 / 0.5).
        batch_size_per_image, positive_fraction: the sampler's numbers, used when
            `sample` is True in `__call__` (no OHEM).
    """

    def __init__(
        self,
        box_coder: BoxCoder,
        fg_iou_thresh: float = 0.5,
        bg_iou_thresh: float = 0.5,
        batch_size_per_image: int = 128,
        positive_fraction: float = 0.25,
    ) -> None:
        self.box_coder = box_coder
        self.matcher = Matcher(fg_iou_thresh, bg_iou_thresh, allow_low_quality_matches=False)
        self.sampler = BalancedPositiveNegativeSampler(batch_size_per_image, positive_fraction)

    def match(
        self, proposals: Tensor, gt_boxes: Tensor, gt_labels: Tensor
    ) -> tuple[Tensor, Tensor]:
        """proposals: Tensor[P, 4], gt_boxes: Tensor[M, 4], gt_labels: Tensor[M]
        -> (labels int64 Tensor[P], -1 = ignored; matched gt boxes Tensor[P, 4])."""
        if gt_boxes.numel() == 0:
            labels = torch.zeros(len(proposals), dtype=torch.int64, device=proposals.device)
            return labels, torch.zeros_like(proposals)
        idx = self.matcher(box_iou(gt_boxes, proposals))
        labels = gt_labels[idx.clamp(min=0)].to(torch.int64)
        labels[idx == Matcher.BELOW_LOW_THRESHOLD] = 0
        labels[idx == Matcher.BETWEEN_THRESHOLDS] = -1
        return labels, gt_boxes[idx.clamp(min=0)]

    def __call__(
        self, proposals: list[Tensor], targets: list[dict[str, Tensor]], sample: bool
    ) -> RoITargets:
        """proposals: N × Tensor[P, 4]; targets: N dicts, boxes Tensor[M, 4], labels Tensor[M]."""
        all_rois, all_labels, all_matched = [], [], []
        for img, (props, target) in enumerate(zip(proposals, targets, strict=True)):
            gt_boxes = target["boxes"].to(props.dtype)
            props = torch.cat([props.detach(), gt_boxes])
            labels, matched = self.match(props, gt_boxes, target["labels"])
            if sample:
                pos, neg = self.sampler([labels])
                keep = torch.where(pos[0] | neg[0])[0]
            else:
                keep = torch.where(labels >= 0)[0]
            props, labels, matched = props[keep], labels[keep], matched[keep]
            batch_idx = torch.full((len(props), 1), img, dtype=props.dtype, device=props.device)
            all_rois.append(torch.cat([batch_idx, props], dim=1))
            all_labels.append(labels)
            all_matched.append(matched)
        rois = torch.cat(all_rois)
        regression_targets = self.box_coder.encode_single(torch.cat(all_matched), rois[:, 1:])
        labels = torch.cat(all_labels)
        regression_targets[labels == 0] = 0
        return RoITargets(rois, labels, regression_targets)
