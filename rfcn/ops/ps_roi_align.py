"""Position-sensitive RoI align, registered as the custom op ``rfcn::ps_roi_align``.

Shape shorthand: N images, C channels, H x W map, K RoIs, PH x PW bins, C_out = C/(PH*PW).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from rfcn.ops import kernel_launch, roi_args
from rfcn.ops.ps_roi_pool import as_compute


@torch.library.custom_op("rfcn::ps_roi_align", mutates_args=())
def _ps_roi_align_op(
    input: Tensor,
    rois: Tensor,
    spatial_scale: float,
    pooled_height: int,
    pooled_width: int,
    sampling_ratio: int,
) -> Tensor:
    roi_args.check_roi_values(
        rois, input.shape[0], (spatial_scale, pooled_height, pooled_width, sampling_ratio)
    )
    x, r = as_compute(input, rois)
    out = kernel_launch.align_forward(
        x, r, spatial_scale, pooled_height, pooled_width, sampling_ratio
    )
    return out.to(input.dtype)


@_ps_roi_align_op.register_fake
def _(input, rois, spatial_scale, pooled_height, pooled_width, sampling_ratio):
    c_out = input.shape[1] // (pooled_height * pooled_width)
    return input.new_empty((rois.shape[0], c_out, pooled_height, pooled_width))


@torch.library.custom_op("rfcn::ps_roi_align_backward", mutates_args=())
def _ps_roi_align_backward_op(
    grad: Tensor,
    rois: Tensor,
    spatial_scale: float,
    pooled_height: int,
    pooled_width: int,
    sampling_ratio: int,
    batch_size: int,
    channels: int,
    height: int,
    width: int,
) -> Tensor:
    g, r = as_compute(grad, rois)
    shape = (batch_size, channels, height, width)
    gx = kernel_launch.align_backward(
        g, r, spatial_scale, pooled_height, pooled_width, sampling_ratio, shape
    )
    return gx.to(grad.dtype)


@_ps_roi_align_backward_op.register_fake
def _(
    grad,
    rois,
    spatial_scale,
    pooled_height,
    pooled_width,
    sampling_ratio,
    batch_size,
    channels,
    height,
    width,
):
    return grad.new_empty((batch_size, channels, height, width))


def _setup_context(ctx, inputs, output) -> None:
    input, rois, spatial_scale, ph, pw, sampling_ratio = inputs
    ctx.save_for_backward(rois)
    ctx.args = (spatial_scale, ph, pw, sampling_ratio, *input.shape)


def _backward(ctx, grad: Tensor):
    (rois,) = ctx.saved_tensors
    gx = _ps_roi_align_backward_op(grad, rois, *ctx.args)
    return gx, None, None, None, None, None


def _setup_context_bwd(ctx, inputs, output) -> None:
    _, rois, spatial_scale, ph, pw, sampling_ratio = inputs[:6]
    ctx.save_for_backward(rois)
    ctx.args = (spatial_scale, ph, pw, sampling_ratio)


def _backward_bwd(ctx, grad_grad: Tensor):
    # The op is linear in the input: the adjoint of the backward is the forward.
    (rois,) = ctx.saved_tensors
    gg = _ps_roi_align_op(grad_grad, rois, *ctx.args)
    return gg, None, None, None, None, None, None, None, None, None


_ps_roi_align_op.register_autograd(_backward, setup_context=_setup_context)
_ps_roi_align_backward_op.register_autograd(_backward_bwd, setup_context=_setup_context_bwd)


# A leaf of torch.fx graphs (as torchvision marks its ops): symbolic tracing records one call
# instead of running the argument checks on proxies; the checks run when the graph runs.
@torch.fx.wrap
def ps_roi_align(
    input: Tensor,
    boxes: Tensor | list[Tensor],
    output_size: int | tuple[int, int],
    spatial_scale: float = 1.0,
    sampling_ratio: int = -1,
) -> Tensor:
    """Position-sensitive RoI align, torchvision's ``ps_roi_align`` semantics.

    Args:
        input (Tensor[N, C, H, W]): score maps, C divisible by ``output_h * output_w``.
        boxes (Tensor[K, 5] or List[Tensor[L, 4]]): RoIs ``(batch index, x1, y1, x2, y2)`` in
            input-image coordinates, or per-image boxes ``(x1, y1, x2, y2)``.
        output_size (int or Tuple[int, int]): ``(h, w)`` bins.
        spatial_scale (float): factor from box coordinates to the map (e.g. 1/16).
        sampling_ratio (int): bilinear samples per bin side; ``<= 0``: adaptive,
            ``ceil(roi_size / output_size)``.

    Returns:
        Tensor[K, C/(h*w), h, w]: output channel ``c`` of bin ``(i, j)`` averages bilinear
        samples of input channel ``(c*h + i)*w + j`` (no rounding, half-pixel offset).

    Matches torchvision on CPU (float32, float64) wherever torchvision is finite; the
    backward is the exact gradient of the forward. float16/bfloat16 inputs (and autocast) are
    computed in float32 and returned in the input dtype.

    Difference from torchvision: with adaptive sampling, a reversed or zero-size box gets a
    grid of ``ceil(size / bins) <= 0`` samples. torchvision then divides a zero sum by that
    count: 0 (or -0) when the count is nonzero, NaN when it is 0. Here such bins are empty and
    give 0 (gradient 0), like empty bins of ``ps_roi_pool``, so finite boxes never give NaN;
    wherever torchvision is finite the two agree.

    Raises ValueError/TypeError (naming the argument) for bad ranks or box shapes, C not
    divisible, dtype/device mismatch, batch index out of range, non-finite boxes, or a
    sampling grid above 1024 samples per bin side (``sampling_ratio``, or adaptive for an
    absurdly large box), which would effectively hang.
    """
    ph, pw = roi_args.output_hw(output_size)
    scale = roi_args.check_scale(spatial_scale)
    ratio = roi_args.check_sampling_ratio(sampling_ratio)
    rois = roi_args.boxes_to_rois(boxes)
    roi_args.check_input(input, rois, ph, pw)
    return _ps_roi_align_op(input, rois, scale, ph, pw, ratio)


class PSRoIAlign(nn.Module):
    """See :func:`ps_roi_align`."""

    def __init__(
        self, output_size: int | tuple[int, int], spatial_scale: float, sampling_ratio: int
    ) -> None:
        super().__init__()
        self.output_size = output_size
        self.spatial_scale = spatial_scale
        self.sampling_ratio = sampling_ratio

    def forward(self, input: Tensor, rois: Tensor | list[Tensor]) -> Tensor:
        return ps_roi_align(input, rois, self.output_size, self.spatial_scale, self.sampling_ratio)

    def extra_repr(self) -> str:
        return (
            f"output_size={self.output_size}, spatial_scale={self.spatial_scale}, "
            f"sampling_ratio={self.sampling_ratio}"
        )
