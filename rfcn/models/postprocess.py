"""Detections from voted class scores and box deltas, batched over RoIs and images.

Shape shorthand in this module:
    N: images, R: RoIs over the batch, C: classes including background,
    B: box outputs per RoI (4 class-agnostic, 4C class-specific), D: detections of one image.

No Python loop over RoIs or classes: the (RoI, class) candidates of the batch go through one
score filter and one `batched_nms` keyed by (image, class); the per-image top-k is a rank.
NMS only sees each image's best few hundred candidates (more when needed; see `_nms_topk`),
which gives the same detections at a cost that does not grow with R·C. `single_image` is the
export form (one image, one NMS over every candidate, no data-dependent loop).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision.models.detection._utils import BoxCoder
from torchvision.ops import batched_nms, nms

from rfcn.ops import soft_nms

# Boxes narrower or shorter than this (pixels of the resized image) are dropped, as in torchvision.
MIN_BOX_SIZE = 1e-2


NMS_METHODS = ("nms", "soft_linear", "soft_gaussian")


class DetectionPostProcessor:
    """Softmax, box decoding, clipping, score threshold, per-class NMS (or soft-NMS), top-k.

    Args:
        box_coder: the coder the head was trained with.
        score_thresh: minimum class probability (torchvision's box_score_thresh).
        nms_thresh: IoU of the per-class NMS (paper: 0.3); soft_linear decays above it.
        detections_per_img: top-k kept per image.
        nms_method: "nms", or soft-NMS (Bodla et al. 2017): "soft_linear", "soft_gaussian".
        soft_nms_sigma: the gaussian's sigma; soft_nms_min_score: scores decayed below it
            are dropped.
    """

    def __init__(
        self, box_coder: BoxCoder, score_thresh: float, nms_thresh: float,
        detections_per_img: int, nms_method: str = "nms", soft_nms_sigma: float = 0.5,
        soft_nms_min_score: float = 0.001,
    ) -> None:
        if nms_method not in NMS_METHODS:
            raise ValueError(f"box_nms must be one of {NMS_METHODS}, got {nms_method!r}")
        self.box_coder = box_coder
        self.score_thresh = score_thresh
        self.nms_thresh = nms_thresh
        self.detections_per_img = detections_per_img
        self.nms_method = nms_method
        self.soft_nms_sigma = soft_nms_sigma
        self.soft_nms_min_score = soft_nms_min_score

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
        device = class_logits.device
        sizes = torch.tensor(image_shapes, dtype=box_regression.dtype, device=device)
        scores, boxes, valid = self.candidates(class_logits, box_regression, rois,
                                               sizes.reshape(-1, 2))
        num_box_sets = boxes.shape[1]
        roi_image = rois[:, 0].to(torch.int64)
        if self.nms_method != "nms":  # soft-NMS: every candidate of the image counts
            return [self.select(scores[m], boxes[m], valid[m])
                    for m in (roi_image == i for i in range(num_images))]
        roi_idx, cls_idx = self._nms_topk(scores, valid, boxes, roi_image, num_images)
        boxes = boxes[roi_idx, cls_idx if num_box_sets > 1 else torch.zeros_like(cls_idx)]
        scores, labels, image_idx = scores[roi_idx, cls_idx], cls_idx + 1, roi_image[roi_idx]
        # sorted by decreasing score; group by image (stable) and rank within the image
        order = torch.argsort(image_idx, stable=True)
        boxes, scores, labels, image_idx = (
            boxes[order], scores[order], labels[order], image_idx[order])
        counts = torch.bincount(image_idx, minlength=num_images)
        starts = torch.cumsum(counts, 0) - counts
        rank = torch.arange(len(image_idx), device=device) - starts[image_idx]
        keep = rank < self.detections_per_img
        counts = torch.bincount(image_idx[keep], minlength=num_images).tolist()
        return [
            {"boxes": b, "labels": lab, "scores": s}
            for b, lab, s in zip(boxes[keep].split(counts), labels[keep].split(counts),
                                 scores[keep].split(counts), strict=True)
        ]

    def candidates(
        self, class_logits: Tensor, box_regression: Tensor, rois: Tensor, image_hw: Tensor
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Class probabilities, decoded and clipped boxes, and which (RoI, class) pairs are
        candidates (above the score threshold, with a box of non-trivial size).

        class_logits: Tensor[R, C], box_regression: Tensor[R, B], rois: Tensor[R, 5],
        image_hw: Tensor[N, 2] (h, w) of the resized images -> (scores Tensor[R, C-1],
        boxes Tensor[R, S, 4] (S: 1 class-agnostic, C-1 class-specific), valid Tensor[R, C-1]).
        """
        num_rois, num_classes = class_logits.shape
        scores = F.softmax(class_logits, dim=-1)[:, 1:]  # [R, C-1]
        deltas = box_regression.reshape(num_rois, box_regression.shape[1] // 4, 4)
        if deltas.shape[1] == num_classes:  # class-specific: drop the background column
            deltas = deltas[:, 1:]
        num_box_sets = deltas.shape[1]  # 1 (class-agnostic) or C-1
        boxes = self.box_coder.decode_single(deltas.reshape(num_rois, 4 * num_box_sets),
                                             rois[:, 1:])
        boxes = boxes.reshape(num_rois, num_box_sets, 4)
        # clip before expanding to classes: a class-agnostic box is clipped once
        hw = image_hw.to(boxes.dtype)[rois[:, 0].to(torch.int64)][:, None, :]  # [R, 1, 2]
        x = boxes[..., 0::2].clamp(min=0).minimum(hw[..., 1:2])
        y = boxes[..., 1::2].clamp(min=0).minimum(hw[..., 0:1])
        boxes = torch.stack([x[..., 0], y[..., 0], x[..., 1], y[..., 1]], dim=-1)
        wh = boxes[..., 2:] - boxes[..., :2]
        valid = (scores > self.score_thresh) & (wh >= MIN_BOX_SIZE).all(dim=-1)  # [R, C-1]
        return scores, boxes, valid

    def select(self, scores: Tensor, boxes: Tensor, valid: Tensor) -> dict[str, Tensor]:
        """One image's detections from its candidates (of one or several passes, as
        test-time augmentation merges them): NMS or soft-NMS per class, then the top-k.

        scores: Tensor[P, C-1], boxes: Tensor[P, S, 4], valid: bool Tensor[P, C-1] ->
        {boxes Tensor[D, 4], labels int64 Tensor[D], scores Tensor[D]} by decreasing score.
        """
        roi_idx, cls_idx = torch.nonzero(valid, as_tuple=True)
        box_set = cls_idx if boxes.shape[1] > 1 else torch.zeros_like(cls_idx)
        cand_boxes, cand_scores = boxes[roi_idx, box_set], scores[roi_idx, cls_idx]
        if self.nms_method == "nms":
            keep = class_offset_nms(cand_boxes, cand_scores, cls_idx, self.nms_thresh)
            new_scores = cand_scores[keep]
        else:
            keep, new_scores = soft_nms(cand_boxes, cand_scores, cls_idx, self.nms_method,
                                        self.nms_thresh, self.soft_nms_sigma,
                                        self.soft_nms_min_score)
        keep, new_scores = keep[: self.detections_per_img], new_scores[: self.detections_per_img]
        return {"boxes": cand_boxes[keep], "labels": cls_idx[keep] + 1, "scores": new_scores}

    def single_image(
        self, class_logits: Tensor, box_regression: Tensor, rois: Tensor, image_hw: Tensor
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Detections of one image with one NMS over every candidate: the same detections
        as `__call__` (ties at the top-k cut aside) without its data-dependent loop, so the
        graph exports (torch.export, ONNX).

        class_logits: Tensor[R, C], box_regression: Tensor[R, B], rois: Tensor[R, 5] (all of
        image 0), image_hw: Tensor[1, 2] -> (boxes Tensor[D, 4], scores Tensor[D], labels
        int64 Tensor[D]) sorted by decreasing score.
        """
        scores, boxes, valid = self.candidates(class_logits, box_regression, rois, image_hw)
        roi_idx, cls_idx = torch.nonzero(valid, as_tuple=True)
        box_set = cls_idx if boxes.shape[1] > 1 else torch.zeros_like(cls_idx)
        boxes, scores = boxes[roi_idx, box_set], scores[roi_idx, cls_idx]
        keep = class_offset_nms(boxes, scores, cls_idx, self.nms_thresh)
        keep = keep[: self.detections_per_img]
        return boxes[keep], scores[keep], cls_idx[keep] + 1

    def _nms_topk(
        self, scores: Tensor, valid: Tensor, boxes: Tensor, roi_image: Tensor, num_images: int
    ) -> tuple[Tensor, Tensor]:
        """Per-class NMS of the valid candidates, enough of it for each image's top-k.

        scores, valid: Tensor[R, C-1]; boxes: Tensor[R, S, 4] (S: 1 or C-1); roi_image:
        int64 Tensor[R] -> (roi_idx, cls_idx) Tensor[P] of the kept candidates, sorted by
        decreasing score (cls_idx counts from 0 = class 1).

        Greedy NMS decides a candidate from the higher-scored ones of its class only. So if
        NMS over an image's `limit` best candidates keeps `detections_per_img` of them, no
        later candidate can reach the image's top-k: the detections equal those of NMS over
        every candidate (ties at the cut aside), for the cost of NMS over `limit` candidates
        instead of R·(C-1). `limit` grows ×4 while an image keeps too few. Candidates enter
        NMS in (RoI, class) order, so of two with exactly equal scores the first RoI wins, as
        in `single_image`.
        """
        num_cls = scores.shape[1]
        masked = scores.masked_fill(~valid, -torch.inf)
        rows = [torch.where(roi_image == i)[0] for i in range(num_images)]
        limit = max(4 * self.detections_per_img, 64)
        while True:
            roi_parts, cls_parts, complete = [], [], []
            for r in rows:
                flat = masked[r].flatten()
                top = flat.topk(min(limit, flat.numel()))
                # in (RoI, class) order: NMS breaks exact score ties by input order (PS
                # pooling quantises, so distinct RoIs can tie), and topk's order is arbitrary
                found = top.indices[top.values > -torch.inf].sort().values
                complete.append(len(found) < limit)  # every valid candidate of the image is in
                roi_parts.append(r[found // num_cls])
                cls_parts.append(found % num_cls)
            roi_idx, cls_idx = torch.cat(roi_parts), torch.cat(cls_parts)
            box = boxes[roi_idx, cls_idx if boxes.shape[1] > 1 else torch.zeros_like(cls_idx)]
            image_idx = roi_image[roi_idx]
            keep = batched_nms(box, scores[roi_idx, cls_idx], image_idx * num_cls + cls_idx,
                               self.nms_thresh)
            counts = torch.bincount(image_idx[keep], minlength=num_images).tolist()
            if all(c or n >= self.detections_per_img for c, n in zip(complete, counts,
                                                                     strict=True)):
                return roi_idx[keep], cls_idx[keep]
            limit *= 4


def class_offset_nms(boxes: Tensor, scores: Tensor, classes: Tensor, iou_thresh: float) -> Tensor:
    """NMS within each class, as one `nms` call: each class's boxes are shifted by
    ``class * (max coordinate + 1)`` so boxes of different classes never overlap
    (torchvision's `batched_nms` trick, without its data-dependent branches, so it exports).

    boxes: Tensor[P, 4] xyxy with coordinates >= 0, scores: Tensor[P], classes: int64
    Tensor[P] -> int64 Tensor[Q] indices kept, by decreasing score.
    """
    # max over the boxes and a 0, so that an empty set needs no branch
    top = torch.cat([boxes.reshape(-1), boxes.new_zeros(1)]).max()
    shifted = boxes + (classes.to(boxes.dtype) * (top + 1))[:, None]
    return nms(shifted, scores, iou_thresh)
