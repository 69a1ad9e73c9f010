"""Position-sensitive head: 1×1 reduction, PS score/box maps, PS RoI pooling and voting.

Shape shorthand in this module:
    N: images, C5: trunk channels, D: head_dim, Hf, Wf: feature map size (stride 16),
    C: classes including background, k: PS grid size, R: RoIs over the whole batch,
    B: box outputs per RoI (4 class-agnostic, 4C class-specific).

The maps follow the op's channel convention (rfcn.ops, same as the Caffe layer): output
channel c of bin (i, j) reads map (c·k + i)·k + j, so the k² maps of one class are adjacent.
The PS op is looked up on `rfcn.ops` at call time (never imported by value), so there is one
code path for the score and box maps and tests can intercept it.

ps_op="deform" is Deformable-ConvNets' `rfcn_dcn` head: two more 1×1 convs (zero-initialised,
so training starts from plain R-FCN) give offset maps, 2k²·C channels for the class scores and
2k² for the boxes; PS pooling of those maps without offsets gives each RoI's k×k bin offsets
(one (x, y) pair per class and bin, and one per bin shared by the box outputs), with which
the deformable op (`rfcn.ops.deform_ps_roi_pool`) pools the score and box maps.
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
        ps_op: "pool" (rfcn.ops.ps_roi_pool), "align" (rfcn.ops.ps_roi_align) or "deform"
            (rfcn.ops.deform_ps_roi_pool with learned offsets, see the module docstring).
        spatial_scale: feature stride inverse (1/16).
        trans_std, sample_per_part: of the deformable op (Deformable-ConvNets: 0.1, 4).
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
        trans_std: float = 0.1,
        sample_per_part: int = 4,
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
        self.trans_std, self.sample_per_part = trans_std, sample_per_part
        if ps_op == "deform":
            self.cls_offsets = nn.Conv2d(head_dim, 2 * k * k * num_classes, 1)
            self.box_offsets = nn.Conv2d(head_dim, 2 * k * k, 1)
            for conv in (self.cls_offsets, self.box_offsets):
                nn.init.zeros_(conv.weight)
                nn.init.zeros_(conv.bias)

    def score_maps(self, features: Tensor) -> tuple[Tensor, Tensor]:
        """Tensor[N, C5, Hf, Wf] -> (Tensor[N, k²C, Hf, Wf], Tensor[N, k²B, Hf, Wf])."""
        x = self.reduce(features).relu_()
        return self.cls_maps(x), self.box_maps(x)

    def deform_offsets(self, x: Tensor, rois: Tensor) -> tuple[Tensor, Tensor]:
        """ps_op="deform": each RoI's bin offsets from the reduced features x: Tensor[N, D,
        Hf, Wf] -> (Tensor[R, 2C, k, k], Tensor[R, 2, k, k])."""
        pool = rfcn_ops.deform_ps_roi_pool
        args = (self.k, self.spatial_scale, self.trans_std, self.sample_per_part)
        return (pool(self.cls_offsets(x), rois, None, *args),
                pool(self.box_offsets(x), rois, None, *args))

    def pool_and_vote(self, maps: Tensor, rois: Tensor, offsets: Tensor | None = None
                      ) -> Tensor:
        """PS RoI pooling then the mean vote over the k×k bins.

        maps: Tensor[N, k²·M, Hf, Wf]; rois: Tensor[R, 5] (batch index, x1, y1, x2, y2) in
        image pixels -> Tensor[R, M].
        """
        if self.ps_op == "pool":
            pooled = rfcn_ops.ps_roi_pool(maps, rois, self.k, self.spatial_scale)
        elif self.ps_op == "deform":
            pooled = rfcn_ops.deform_ps_roi_pool(maps, rois, offsets, self.k, self.spatial_scale,
                                                 self.trans_std, self.sample_per_part)
        else:
            pooled = rfcn_ops.ps_roi_align(
                maps, rois, self.k, self.spatial_scale, ALIGN_SAMPLING_RATIO)
        return pooled.mean(dim=(2, 3))

    def forward(self, features: Tensor, rois: Tensor) -> tuple[Tensor, Tensor]:
        """features: Tensor[N, C5, Hf, Wf], rois: Tensor[R, 5]
        -> (class_logits Tensor[R, C], box_regression Tensor[R, B])."""
        x = self.reduce(features).relu_()
        cls_maps, box_maps = self.cls_maps(x), self.box_maps(x)
        if self.ps_op != "deform":
            return self.pool_and_vote(cls_maps, rois), self.pool_and_vote(box_maps, rois)
        cls_off, box_off = self.deform_offsets(x, rois)
        return (self.pool_and_vote(cls_maps, rois, cls_off),
                self.pool_and_vote(box_maps, rois, box_off))
