"""`DeployableRFCN`: one image in, its detections out, in a form torch.export and ONNX take.

Shape shorthand in this module:
    H, W: input image, h, w: resized image, Hp, Wp: padded (multiple of `size_divisible`),
    Hf, Wf: Hp/16, Wp/16, A: anchors per location, P: proposals, C: classes with background,
    D: detections.

The eval forward of `RFCN` batches a list of images and loops over them in Python; its
post-processing grows a candidate cut until each image's top-k is settled. Both are
data-dependent control flow that no graph exporter can keep. This module runs the same
modules (trunk, RPN head, anchors, box coders, PS head) on one image with the same numbers,
written without it:

- resize: the size ``floor(side * scale)`` is computed in float64 tensors, exactly as the
  eager transform computes it in Python floats, and becomes a data-dependent size;
- RPN: torchvision's `filter_proposals` for one image and one feature level (a single
  `nms` is exactly its `batched_nms` over one level);
- detections: `DetectionPostProcessor.single_image`, one class-offset NMS over all
  candidates (what the grown cut of the eager path is equivalent to).

`ps_ops="torch"` pools with `rfcn.export.ps_ops_torch` (standard ONNX operators once
exported); `ps_ops="custom"` keeps the Numba custom ops ``torch.ops.rfcn.*`` (for a .pt2
file run by PyTorch with rfcn installed: exact kernels, faster).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.models.detection.image_list import ImageList
from torchvision.models.detection.rpn import RegionProposalNetwork, concat_box_prediction_layers
from torchvision.ops import nms

from rfcn.export.ps_ops_torch import ps_roi_align_torch, ps_roi_pool_torch
from rfcn.models.ps_head import ALIGN_SAMPLING_RATIO, PSRoIHead
from rfcn.models.rfcn import RFCN
from rfcn.models.transform import RFCNTransform

__all__ = ["DeployableRFCN", "PS_OP_FORMS"]

PS_OP_FORMS = ("torch", "custom")


class DeployableRFCN(nn.Module):
    """The eval-mode detector on one image, as a graph without Python control flow on data.

    Args:
        model: the detector in eval mode (its modules are shared, not copied).
        ps_ops: "torch" (plain tensor ops, for ONNX) or "custom" (``torch.ops.rfcn.*``).
    """

    def __init__(self, model: RFCN, ps_ops: str = "torch") -> None:
        super().__init__()
        if ps_ops not in PS_OP_FORMS:
            raise ValueError(f"ps_ops must be one of {PS_OP_FORMS}, got {ps_ops!r}")
        if model.training:
            raise ValueError("DeployableRFCN runs the eval forward: call model.eval() first")
        if model.postprocessor.nms_method != "nms":
            raise ValueError(f"box_nms={model.postprocessor.nms_method!r} (soft-NMS) has no graph "
                             "form: export with box_nms=nms (tools/export.py test.box_nms=nms)")
        if ps_ops == "torch" and model.head.ps_op not in ("pool", "align"):
            raise ValueError(f"ps_op={model.head.ps_op!r} has no plain-tensor form; "
                             "use ps_ops='custom' (PyTorch runtimes only)")
        self.transform: RFCNTransform = model.transform
        self.trunk, self.rpn, self.head = model.trunk, model.rpn, model.head
        self.postprocessor = model.postprocessor
        self.ps_ops = ps_ops

    def forward(self, image: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """image: float Tensor[3, H, W] in [0, 1] -> (boxes Tensor[D, 4] xyxy in input-image
        pixels, labels int64 Tensor[D] in 1..C-1, scores Tensor[D]) by decreasing score."""
        batch, resized_hw = preprocess(self.transform, image)
        c4, c5 = self.trunk(batch)
        proposals = single_image_proposals(self.rpn, batch, c4, resized_hw)
        rois = torch.cat([torch.zeros_like(proposals[:, :1]), proposals], dim=1)
        cls_maps, box_maps = self.head.score_maps(c5)
        class_logits = self._pool_and_vote(cls_maps, rois)
        box_regression = self._pool_and_vote(box_maps, rois)
        boxes, scores, labels = self.postprocessor.single_image(
            class_logits, box_regression, rois, resized_hw[None])
        original_hw = torch.tensor(image.shape[1:], dtype=torch.float32, device=image.device)
        ratio = original_hw / resized_hw.to(torch.float32)  # as the transform's resize_boxes
        boxes = boxes * ratio.flip(0).repeat(2)
        return boxes, labels, scores

    def _pool_and_vote(self, maps: Tensor, rois: Tensor) -> Tensor:
        """`PSRoIHead.pool_and_vote` with the chosen form of the PS op: Tensor[1, k²M, Hf, Wf],
        Tensor[P, 5] -> Tensor[P, M]."""
        head: PSRoIHead = self.head
        if self.ps_ops == "custom":
            return head.pool_and_vote(maps, rois)
        if head.ps_op == "pool":
            pooled = ps_roi_pool_torch(maps, rois, head.k, head.spatial_scale)
        else:  # "align" (checked in __init__)
            pooled = ps_roi_align_torch(maps, rois, head.k, head.spatial_scale,
                                        ALIGN_SAMPLING_RATIO)
        return pooled.mean(dim=(2, 3))


def preprocess(transform: RFCNTransform, image: Tensor) -> tuple[Tensor, Tensor]:
    """Normalise, resize and pad one image exactly as `RFCNTransform` (eval) does.

    image: Tensor[3, H, W] -> (Tensor[1, 3, Hp, Wp], resized (h, w) as int64 Tensor[2]).
    """
    image = transform.normalize(image)
    hw = torch.tensor(image.shape[1:], dtype=torch.float64, device=image.device)
    # RFCNTransform.resize, in float64 like its Python floats: same size for every image
    scale = torch.minimum(float(transform.eval_min_size) / hw.min(),
                          float(transform.max_size) / hw.max())
    resized_hw = torch.floor(hw * scale).clamp(min=1).to(torch.int64)
    stride = transform.size_divisible
    padded_hw = (resized_hw + (stride - 1)) // stride * stride
    # Sizes from data: plain (unbacked) symbols for export; the padded ones are their own
    # symbols too, which keeps every shape expression after them short.
    h, w = resized_hw[0].item(), resized_hw[1].item()
    hp, wp = padded_hw[0].item(), padded_hw[1].item()
    for side, padded in ((h, hp), (w, wp)):
        torch._check(side >= 1)
        torch._check(padded >= side)
    image = F.interpolate(image[None], size=(h, w), mode="bilinear", align_corners=False)
    pad_h, pad_w = hp - h, wp - w
    return F.pad(image, (0, pad_w, 0, pad_h)), resized_hw


def single_image_proposals(
    rpn: RegionProposalNetwork, batch: Tensor, features: Tensor, image_hw: Tensor
) -> Tensor:
    """torchvision's RPN forward (eval) on one image and one feature level.

    batch: Tensor[1, 3, Hp, Wp], features: Tensor[1, C4, Hf, Wf], image_hw: int64 Tensor[2]
    resized (h, w) -> proposals Tensor[P, 4] by decreasing objectness.
    """
    objectness, deltas = rpn.head([features])
    image_list = ImageList(batch, [(batch.shape[-2], batch.shape[-1])])
    anchors = rpn.anchor_generator(image_list, [features])
    objectness, deltas = concat_box_prediction_layers(objectness, deltas)
    proposals = rpn.box_coder.decode(deltas.detach(), anchors).reshape(-1, 4)
    objectness = objectness.reshape(-1)
    top_n = torch.sym_min(rpn.pre_nms_top_n(), objectness.shape[0])
    objectness, top_idx = objectness.topk(top_n)
    boxes, scores = proposals[top_idx], torch.sigmoid(objectness)
    hw = image_hw.to(boxes.dtype)
    x = boxes[:, 0::2].clamp(min=0).minimum(hw[1])
    y = boxes[:, 1::2].clamp(min=0).minimum(hw[0])
    boxes = torch.stack([x[:, 0], y[:, 0], x[:, 1], y[:, 1]], dim=1)
    wh = boxes[:, 2:] - boxes[:, :2]
    keep = (wh >= rpn.min_size).all(dim=1) & (scores >= rpn.score_thresh)
    boxes, scores = boxes[keep], scores[keep]
    keep = nms(boxes, scores, rpn.nms_thresh)[: rpn.post_nms_top_n()]
    return boxes[keep]
