"""Position-sensitive head: 1×1 reduction, PS score/box maps, PS RoI pooling and voting.

Shape shorthand in this module:
    N: images, C5: trunk channels, D: head_dim, Hf, Wf: feature map size (stride 16),
    C: classes including background, k: PS grid size, R: RoIs over the whole batch,
    B: box outputs per RoI (4 class-agnostic, 4C class-specific).

The maps follow the op's channel convention (rfcn.ops, same as the Caffe layer): output
channel c of bin (i, j) reads map (c·k + i)·k + j, so the k² maps of one class are adjacent.
The PS op is looked up on `rfcn.ops` at call time (never imported by value), so there is one
code path for the score and box maps and tests can intercept it.
"""

from __future__ import annotations

from torch import Tensor, nn

from rfcn import ops as rfcn_ops
from rfcn.models.spec import PS_OPS

# Fixed sampling grid for ps_op="align": the adaptive default (-1) grows with the RoI size,
# which makes the per-RoI cost depend on the image scale.
ALIGN_SAMPLING_RATIO = 2


class PSRoIHead(nn.Module):
    """R-FCN head.

    Args:
        in_channels: C5, channels of the (dilated) conv5 features.
        head_dim: D, width of the 1×1 reduction conv (paper: 1024).
        num_classes: C, including the background.
        k: PS grid size (paper: 7).
        class_agnostic_bbox: 4k² box maps if True, else 4k²·C.
        ps_op: "pool" (rfcn.ops.ps_roi_pool) or "align" (rfcn.ops.ps_roi_align).
        spatial_scale: feature stride inverse (1/16).
    """

    def __init__(
        self,
        in_channels: int,
        head_dim: int,
        num_classes: int,
        k: int = 7,
        class_agnostic_bbox: bool = True,
        ps_op: str = "pool",
        spatial_scale: float = 1.0 / 16,
    ) -> None:
        super().__init__()
        if ps_op not in PS_OPS:
            raise ValueError(f"ps_op must be one of {PS_OPS}, got {ps_op!r}")
        if num_classes < 2:
            raise ValueError(
                f"num_classes counts the background and must be >= 2, got {num_classes}")
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        self.num_classes, self.k, self.ps_op = num_classes, k, ps_op
        self.class_agnostic_bbox = class_agnostic_bbox
        self.spatial_scale = spatial_scale
        box_outputs = 4 if class_agnostic_bbox else 4 * num_classes
        self.reduce = nn.Conv2d(in_channels, head_dim, 1)
        self.cls_maps = nn.Conv2d(head_dim, k * k * num_classes, 1)
        self.box_maps = nn.Conv2d(head_dim, k * k * box_outputs, 1)
        nn.init.normal_(self.reduce.weight, std=0.01)
        nn.init.normal_(self.cls_maps.weight, std=0.01)
        nn.init.normal_(self.box_maps.weight, std=0.001)
        for conv in (self.reduce, self.cls_maps, self.box_maps):
            nn.init.zeros_(conv.bias)

    def score_maps(self, features: Tensor) -> tuple[Tensor, Tensor]:
        """Tensor[N, C5, Hf, Wf] -> (Tensor[N, k²C, Hf, Wf], Tensor[N, k²B, Hf, Wf])."""
        x = self.reduce(features).relu_()
        return self.cls_maps(x), self.box_maps(x)

    def pool_and_vote(self, maps: Tensor, rois: Tensor) -> Tensor:
        """PS RoI pooling then the mean vote over the k×k bins.

        maps: Tensor[N, k²·M, Hf, Wf]; rois: Tensor[R, 5] (batch index, x1, y1, x2, y2) in
        image pixels -> Tensor[R, M].
        """
        if self.ps_op == "pool":
            pooled = rfcn_ops.ps_roi_pool(maps, rois, self.k, self.spatial_scale)
        else:
            pooled = rfcn_ops.ps_roi_align(
                maps, rois, self.k, self.spatial_scale, ALIGN_SAMPLING_RATIO)
        return pooled.mean(dim=(2, 3))

    def forward(self, features: Tensor, rois: Tensor) -> tuple[Tensor, Tensor]:
        """features: Tensor[N, C5, Hf, Wf], rois: Tensor[R, 5]
        -> (class_logits Tensor[R, C], box_regression Tensor[R, B])."""
        cls_maps, box_maps = self.score_maps(features)
        return self.pool_and_vote(cls_maps, rois), self.pool_and_vote(box_maps, rois)
