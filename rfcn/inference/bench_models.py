"""The detectors the benchmarks time, with random weights (nothing is downloaded): R-FCN R-50
as inference runs it (frozen BatchNorm with trained-like statistics, through inference_copy),
R-FCN R-50 as training from scratch builds it, torchvision's Faster R-CNN R-50-FPN as
torchvision ships it, and random training targets."""

from __future__ import annotations

import logging
import warnings

import torch
import torchvision
from torch import Tensor, nn
from torchvision.ops.misc import FrozenBatchNorm2d

from rfcn.models import rfcn_resnet50
from rfcn.models.builders import FrozenBNWithoutWeightsWarning
from rfcn.models.inference import inference_copy

NUM_CLASSES = 81  # COCO's 80 and the background


def build_rfcn(
    size: tuple[int, int], post_nms: int, device: torch.device, score_thresh: float,
    num_classes: int = NUM_CLASSES,
) -> nn.Module:
    """The benchmarked R-FCN as inference runs it: through inference_copy."""
    return inference_copy(build_rfcn_model(size, post_nms, device, score_thresh, num_classes))


def build_rfcn_model(
    size: tuple[int, int], post_nms: int, device: torch.device, score_thresh: float,
    num_classes: int = NUM_CLASSES,
) -> nn.Module:
    """R-FCN R-50, frozen BN with trained-like statistics, eval mode (no inference copy)."""
    torch.manual_seed(0)  # every R-FCN of the run has the same weights
    # (the builder warns and logs that frozen BN without ImageNet weights is the identity: the
    # statistics are set below)
    backbone_log = logging.getLogger("rfcn.models.backbone")
    level = backbone_log.level
    backbone_log.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=FrozenBNWithoutWeightsWarning)
            model = rfcn_resnet50(
                num_classes, min_size=size[0], max_size=size[1],
                rpn_post_nms_top_n_test=post_nms, box_score_thresh=score_thresh,
                norm="frozen_bn",
            ).to(device)
    finally:
        backbone_log.setLevel(level)
    _randomise_frozen_bn(model)
    return model.eval()


def build_rfcn_for_training(size: tuple[int, int], device: torch.device,
                            num_classes: int = NUM_CLASSES) -> nn.Module:
    """The builder's random-init defaults (GroupNorm trunk, OHEM), as training from scratch."""
    torch.manual_seed(0)
    return rfcn_resnet50(num_classes, min_size=size[0], max_size=size[1]).to(device)


@torch.no_grad()
def _randomise_frozen_bn(model: nn.Module) -> None:
    """Statistics like a trained network's (the timing does not depend on them)."""
    gen = torch.Generator().manual_seed(0)
    for m in model.modules():
        if isinstance(m, FrozenBatchNorm2d):
            for buf, lo, hi in ((m.weight, 0.5, 1.5), (m.running_var, 0.5, 2.0)):
                buf.copy_(torch.empty(buf.shape).uniform_(lo, hi, generator=gen))
            for buf in (m.bias, m.running_mean):
                buf.copy_(torch.randn(buf.shape, generator=gen) * 0.1)


def build_torchvision(
    size: tuple[int, int], post_nms: int, device: torch.device, score_thresh: float,
    num_classes: int = NUM_CLASSES,
) -> nn.Module:
    """torchvision's fasterrcnn_resnet50_fpn, random weights (no download), eval mode."""
    torch.manual_seed(0)
    return torchvision.models.detection.fasterrcnn_resnet50_fpn(
        weights=None, weights_backbone=None, num_classes=num_classes, min_size=size[0],
        max_size=size[1], rpn_post_nms_top_n_test=post_nms, box_score_thresh=score_thresh,
    ).to(device).eval()


def random_targets(image: Tensor, num_boxes: int, seed: int,
                   num_classes: int = NUM_CLASSES) -> dict[str, Tensor]:
    """`num_boxes` random boxes (10-30% of the image a side) with random labels, seeded."""
    g = torch.Generator().manual_seed(seed)
    h, w = image.shape[-2:]
    xy = torch.rand(num_boxes, 2, generator=g) * torch.tensor([w * 0.7, h * 0.7])
    wh = (0.1 + 0.2 * torch.rand(num_boxes, 2, generator=g)) * torch.tensor([w, h])
    boxes = torch.cat([xy, xy + wh], dim=1)
    labels = torch.randint(1, num_classes, (num_boxes,), generator=g)
    return {"boxes": boxes.to(image.device), "labels": labels.to(image.device)}
