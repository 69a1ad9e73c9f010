"""Region proposal network on the stride-16 conv4 features.

Shape shorthand in this module:
    N: images, C4: conv4 channels, A: anchors per location, Hf, Wf: feature map size (H/16, W/16).

torchvision's AnchorGenerator and RegionProposalNetwork do the work; only the head is ours,
because torchvision's RPNHead keeps the input width in its 3×3 conv (1024 for ResNet-50)
while the paper uses 512 channels there (half the FLOPs on conv4 features).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.rpn import RegionProposalNetwork


class RPNHead(nn.Module):
    """3×3 conv + ReLU, then 1×1 objectness (A maps) and 1×1 box deltas (4A maps)."""

    def __init__(self, in_channels: int, mid_channels: int, num_anchors: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, mid_channels, 3, padding=1)
        self.cls_logits = nn.Conv2d(mid_channels, num_anchors, 1)
        self.bbox_pred = nn.Conv2d(mid_channels, 4 * num_anchors, 1)
        for layer in (self.conv, self.cls_logits, self.bbox_pred):
            nn.init.normal_(layer.weight, std=0.01)
            nn.init.zeros_(layer.bias)

    def forward(self, features: list[Tensor]) -> tuple[list[Tensor], list[Tensor]]:
        """[Tensor[N, C4, Hf, Wf]] -> ([Tensor[N, A, Hf, Wf]], [Tensor[N, 4A, Hf, Wf]])."""
        logits, deltas = [], []
        for x in features:
            t = torch.relu(self.conv(x))
            logits.append(self.cls_logits(t))
            deltas.append(self.bbox_pred(t))
        return logits, deltas


def build_rpn(
    in_channels: int,
    mid_channels: int,
    anchor_sizes: Sequence[int],
    aspect_ratios: Sequence[float],
    pre_nms_top_n: dict[str, int],
    post_nms_top_n: dict[str, int],
    nms_thresh: float,
    fg_iou_thresh: float,
    bg_iou_thresh: float,
    batch_size_per_image: int,
    positive_fraction: float,
    score_thresh: float = 0.0,
) -> RegionProposalNetwork:
    """torchvision RegionProposalNetwork on one feature map with len(sizes)·len(ratios) anchors.

    pre_nms_top_n / post_nms_top_n: {"training": n, "testing": n}.
    """
    anchors = AnchorGenerator(
        sizes=(tuple(int(s) for s in anchor_sizes),),
        aspect_ratios=(tuple(float(r) for r in aspect_ratios),),
    )
    head = RPNHead(in_channels, mid_channels, anchors.num_anchors_per_location()[0])
    return RegionProposalNetwork(
        anchors, head,
        fg_iou_thresh=fg_iou_thresh, bg_iou_thresh=bg_iou_thresh,
        batch_size_per_image=batch_size_per_image, positive_fraction=positive_fraction,
        pre_nms_top_n=dict(pre_nms_top_n), post_nms_top_n=dict(post_nms_top_n),
        nms_thresh=nms_thresh, score_thresh=score_thresh,
    )
