"""The R-FCN detector: transform → trunk → RPN → position-sensitive head → post-processing.

Shape shorthand in this module:
    N: images, H, W: padded (resized) image size, Hf, Wf: H/16, W/16,
    C4, C5: trunk channels, C: classes including background, R: RoIs over the batch.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import Tensor, nn
from torchvision.models.detection.rpn import RegionProposalNetwork
from torchvision.models.detection.transform import GeneralizedRCNNTransform

from rfcn.models.backbone import ResNetTrunk
from rfcn.models.losses import SMOOTH_L1, BoxRegressionLoss, per_roi_losses, rfcn_loss
from rfcn.models.ohem import select_hard_examples
from rfcn.models.postprocess import DetectionPostProcessor
from rfcn.models.ps_head import PSRoIHead
from rfcn.models.roi_sampling import RoITargetAssigner


class RFCN(nn.Module):
    """R-FCN (Dai et al., 2016) with torchvision's detection calling convention.

    Args:
        transform: normalises, resizes and batches the images (and rescales targets).
        trunk: dilated ResNet returning (conv4, conv5), both stride 16.
        rpn: proposals from conv4.
        head: PS score maps on conv5 and the voted class / box outputs per RoI.
        assigner: training targets of the RoIs (and the no-OHEM sampling).
        postprocessor: eval-mode detections.
        ohem: back-propagate only the `ohem_batch_size_per_image` highest-loss RoIs of all
            proposals (after NMS at `ohem_nms_thresh`) instead of a random balanced sample.
        box_loss: the head's per-RoI box loss (smooth-L1 on deltas, or an IoU loss).
    """

    def __init__(
        self,
        transform: GeneralizedRCNNTransform,
        trunk: ResNetTrunk,
        rpn: RegionProposalNetwork,
        head: PSRoIHead,
        assigner: RoITargetAssigner,
        postprocessor: DetectionPostProcessor,
        ohem: bool = True,
        ohem_batch_size_per_image: int = 128,
        ohem_nms_thresh: float = 0.7,
        box_loss: BoxRegressionLoss = SMOOTH_L1,
    ) -> None:
        super().__init__()
        self.transform, self.trunk, self.rpn, self.head = transform, trunk, rpn, head
        self.assigner, self.postprocessor = assigner, postprocessor
        self.ohem = ohem
        self.ohem_batch_size_per_image = ohem_batch_size_per_image
        self.ohem_nms_thresh = ohem_nms_thresh
        self.box_loss = box_loss

    @property
    def num_classes(self) -> int:
        return self.head.num_classes

    def forward(
        self, images: list[Tensor], targets: list[dict[str, Tensor]] | None = None
    ) -> dict[str, Tensor] | list[dict[str, Tensor]]:
        """images: N × Tensor[3, h, w] in [0, 1]; targets (train): N dicts with boxes
        Tensor[M, 4] xyxy pixels and labels int64 Tensor[M] in 1..C-1.

        Train: {"loss_objectness", "loss_rpn_box_reg", "loss_classifier", "loss_box_reg"}.
        Eval: N dicts boxes Tensor[D, 4] (input-image pixels), labels Tensor[D], scores Tensor[D].
        """
        _check_inputs(images, targets, self.training, self.num_classes)
        original_sizes = [(int(img.shape[-2]), int(img.shape[-1])) for img in images]
        image_list, targets = self.transform(images, targets if self.training else None)
        c4, c5 = self.trunk(image_list.tensors)
        proposals, rpn_losses = self.rpn(image_list, OrderedDict([("0", c4)]), targets)
        if self.training:
            assert targets is not None
            roi_targets = self.assigner(proposals, targets, sample=not self.ohem)
            class_logits, box_regression = self.head(c5, roi_targets.rois)
            keep = None
            proposals = roi_targets.rois[:, 1:]
            if self.ohem:
                with torch.no_grad():
                    cls_loss, box_loss = per_roi_losses(
                        class_logits, box_regression, roi_targets.labels,
                        roi_targets.regression_targets, proposals, self.box_loss)
                keep = select_hard_examples(cls_loss + box_loss, roi_targets.rois,
                                            self.ohem_batch_size_per_image, self.ohem_nms_thresh)
            losses = rfcn_loss(class_logits, box_regression, roi_targets.labels,
                               roi_targets.regression_targets, keep, proposals, self.box_loss)
            return {**rpn_losses, **losses}
        rois = _to_rois(proposals)
        class_logits, box_regression = self.head(c5, rois)
        detections = self.postprocessor(class_logits, box_regression, rois,
                                        image_list.image_sizes)
        return self.transform.postprocess(detections, image_list.image_sizes, original_sizes)


    @torch.no_grad()
    def candidates(self, images: list[Tensor]) -> list[tuple[Tensor, Tensor, Tensor]]:
        """Eval mode, before NMS: per image (scores Tensor[P, C-1], boxes Tensor[P, S, 4] in
        input-image pixels, valid bool Tensor[P, C-1]), the candidates that
        `postprocessor.select` turns into detections (test-time augmentation merges the
        candidates of several passes first). S: 1 class-agnostic, C-1 class-specific."""
        _check_inputs(images, None, False, self.num_classes)
        original_sizes = [(int(img.shape[-2]), int(img.shape[-1])) for img in images]
        image_list, _ = self.transform(images, None)
        c4, c5 = self.trunk(image_list.tensors)
        proposals, _ = self.rpn(image_list, OrderedDict([("0", c4)]), None)
        rois = _to_rois(proposals)
        class_logits, box_regression = self.head(c5, rois)
        sizes = torch.tensor(image_list.image_sizes, dtype=box_regression.dtype,
                             device=box_regression.device).reshape(-1, 2)
        scores, boxes, valid = self.postprocessor.candidates(class_logits, box_regression,
                                                             rois, sizes)
        out = []
        for i, ((h, w), (oh, ow)) in enumerate(zip(image_list.image_sizes, original_sizes,
                                                   strict=True)):
            mine = rois[:, 0] == i
            ratio = boxes.new_tensor([ow / w, oh / h, ow / w, oh / h])  # as resize_boxes
            out.append((scores[mine], boxes[mine] * ratio, valid[mine]))
        return out


def _to_rois(boxes: list[Tensor]) -> Tensor:
    """N × Tensor[P, 4] -> Tensor[R, 5] with the image index first."""
    idx = torch.cat([torch.full_like(b[:, :1], i) for i, b in enumerate(boxes)])
    return torch.cat([idx, torch.cat(boxes)], dim=1)


def _check_inputs(
    images: list[Tensor], targets: list[dict[str, Tensor]] | None, training: bool,
    num_classes: int,
) -> None:
    if not isinstance(images, (list, tuple)) or not all(isinstance(i, Tensor) for i in images):
        raise TypeError("images must be a list of Tensor[3, H, W] (one per image)")
    if len(images) == 0:
        raise ValueError("images is empty")
    for i, img in enumerate(images):
        if img.dim() != 3 or img.shape[0] != 3 or img.shape[1] == 0 or img.shape[2] == 0:
            raise ValueError(f"images[{i}] must be Tensor[3, H, W], got shape {tuple(img.shape)}")
        if not (img.is_floating_point() or img.dtype == torch.uint8):
            raise TypeError(f"images[{i}] must be a float tensor in [0, 1] or uint8 in "
                            f"[0, 255], got {img.dtype}")
    if not training:
        return
    if targets is None:
        raise ValueError("targets must be given in training mode (call model.eval() for inference)")
    if not isinstance(targets, (list, tuple)) or len(targets) != len(images):
        raise ValueError(f"targets must be a list of {len(images)} dicts, one per image")
    for i, t in enumerate(targets):
        if not isinstance(t, dict) or "boxes" not in t or "labels" not in t:
            raise ValueError(f"targets[{i}] must be a dict with 'boxes' and 'labels'")
        boxes, labels = t["boxes"], t["labels"]
        if boxes.dim() != 2 or boxes.shape[1] != 4:
            raise ValueError(
                f"targets[{i}]['boxes'] must be Tensor[M, 4], got {tuple(boxes.shape)}")
        if labels.shape != (boxes.shape[0],):
            raise ValueError(f"targets[{i}]['labels'] must be Tensor[{boxes.shape[0]}], "
                             f"got {tuple(labels.shape)}")
        if boxes.numel() and not bool(torch.isfinite(boxes).all()):
            raise ValueError(f"targets[{i}]['boxes'] has non-finite values")
        if boxes.numel() and bool((boxes[:, 2:] <= boxes[:, :2]).any()):
            raise ValueError(f"targets[{i}]['boxes'] has degenerate boxes (x2 <= x1 or y2 <= y1)")
        if labels.numel() and (int(labels.min()) < 1 or int(labels.max()) >= num_classes):
            raise ValueError(f"targets[{i}]['labels'] must be in 1..{num_classes - 1}")
