"""Detections from voted class scores and box deltas, batched over RoIs and images.

Shape shorthand in this module:
    N: images, R: RoIs over the batch, C: classes including background,
    B: box outputs per RoI (4 class-agnostic, 4C class-specific), D: detections of one image.

No Python loop over RoIs or classes: every (RoI, class) candidate of the batch goes through one
score filter and one `batched_nms` keyed by (image, class); the per-image top-k is a rank.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision.models.detection._utils import BoxCoder
from torchvision.ops import batched_nms

# Boxes narrower or shorter than this (pixels of the resized image) are dropped, as in torchvision.
MIN_BOX_SIZE = 1e-2


class DetectionPostProcessor:
    """Softmax, box decoding, clipping, score threshold, per-class NMS, top-k.

    Args:
        box_coder: the coder the head was trained with.
        score_thresh: minimum class probability (torchvision's box_score_thresh).
        nms_thresh: IoU of the per-class NMS (paper: 0.3).
        detections_per_img: top-k kept per image.
    """

    def __init__(
        self, box_coder: BoxCoder, score_thresh: float, nms_thresh: float, detections_per_img: int
    ) -> None:
        self.box_coder = box_coder
        self.score_thresh = score_thresh
        self.nms_thresh = nms_thresh
        self.detections_per_img = detections_per_img

    def __call__(
        self,
        class_logits: Tensor,
        box_regression: Tensor,
        rois: Tensor,
        image_shapes: list[tuple[int, int]],
    ) -> list[dict[str, Tensor]]:
        """class_logits: Tensor[R, C], box_regression: Tensor[R, B], rois: Tensor[R, 5],
        image_shapes: N × (h, w) -> N dicts boxes Tensor[D, 4], labels int64 Tensor[D] in
        1..C-1, scores Tensor[D]."""
        num_images = len(image_shapes)
        num_rois, num_classes = class_logits.shape
        device = class_logits.device
        scores = F.softmax(class_logits, dim=-1)[:, 1:]  # [R, C-1]
        deltas = box_regression.reshape(num_rois, box_regression.shape[1] // 4, 4)
        if deltas.shape[1] == num_classes:  # class-specific: drop the background column
            deltas = deltas[:, 1:]
        num_box_sets = deltas.shape[1]  # 1 (class-agnostic) or C-1
        boxes = self.box_coder.decode_single(deltas.reshape(num_rois, 4 * num_box_sets),
                                             rois[:, 1:])
        boxes = boxes.reshape(num_rois, num_box_sets, 4)
        # clip before expanding to classes: a class-agnostic box is clipped once
        roi_image = rois[:, 0].to(torch.int64)
        sizes = torch.tensor(image_shapes, dtype=boxes.dtype, device=device).reshape(-1, 2)
        hw = sizes[roi_image][:, None, :]  # [R, 1, 2] as (h, w)
        x = boxes[..., 0::2].clamp(min=0).minimum(hw[..., 1:2])
        y = boxes[..., 1::2].clamp(min=0).minimum(hw[..., 0:1])
        boxes = torch.stack([x[..., 0], y[..., 0], x[..., 1], y[..., 1]], dim=-1)

        # candidates (RoI, class) above the threshold, then one NMS keyed by (image, class)
        roi_idx, cls_idx = torch.where(scores > self.score_thresh)
        cand_scores = scores[roi_idx, cls_idx]
        boxes = boxes[roi_idx, cls_idx if num_box_sets > 1 else torch.zeros_like(cls_idx)]
        labels, image_idx = cls_idx + 1, roi_image[roi_idx]
        wh = boxes[:, 2:] - boxes[:, :2]
        keep = torch.where((wh >= MIN_BOX_SIZE).all(dim=1))[0]
        keep = keep[batched_nms(boxes[keep], cand_scores[keep],
                                image_idx[keep] * num_classes + labels[keep], self.nms_thresh)]
        scores = cand_scores
        # keep is sorted by decreasing score; group by image (stable) and rank within the image
        keep = keep[torch.argsort(image_idx[keep], stable=True)]
        img = image_idx[keep]
        counts = torch.bincount(img, minlength=num_images)
        starts = torch.cumsum(counts, 0) - counts
        rank = torch.arange(len(keep), device=device) - starts[img]
        keep = keep[rank < self.detections_per_img]
        counts = torch.bincount(image_idx[keep], minlength=num_images).tolist()
        return [
            {"boxes": b, "labels": lab, "scores": s}
            for b, lab, s in zip(boxes[keep].split(counts), labels[keep].split(counts),
                                 scores[keep].split(counts), strict=True)
        ]
