"""Position-sensitive RoI pooling (R-FCN), registered as the custom op ``rfcn::ps_roi_pool``.

Shape shorthand: N images, C channels, H x W map, K RoIs, PH x PW bins, C_out = C/(PH*PW).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from rfcn.ops import kernel_launch, roi_args


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """float64 stays float64; float32/float16/bfloat16 are computed in float32."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def as_compute(x: Tensor, rois: Tensor) -> tuple[Tensor, Tensor]:
    dt = compute_dtype(x.dtype)
    return x.to(dt).contiguous(), rois.to(dt).contiguous()


@torch.library.custom_op("rfcn::ps_roi_pool", mutates_args=())
def _ps_roi_pool_op(
    input: Tensor, rois: Tensor, spatial_scale: float, pooled_height: int, pooled_width: int
) -> Tensor:
    roi_args.check_roi_values(rois, input.shape[0])
    x, r = as_compute(input, rois)
    out = kernel_launch.pool_forward(x, r, spatial_scale, pooled_height, pooled_width)
    return out.to(input.dtype)


@_ps_roi_pool_op.register_fake
def _(input, rois, spatial_scale, pooled_height, pooled_width):
    c_out = input.shape[1] // (pooled_height * pooled_width)
    return input.new_empty((rois.shape[0], c_out, pooled_height, pooled_width))


@torch.library.custom_op("rfcn::ps_roi_pool_backward", mutates_args=())
def _ps_roi_pool_backward_op(
    grad: Tensor,
    rois: Tensor,
    spatial_scale: float,
    pooled_height: int,
    pooled_width: int,
    batch_size: int,
    channels: int,
    height: int,
    width: int,
) -> Tensor:
    g, r = as_compute(grad, rois)
    shape = (batch_size, channels, height, width)
    gx = kernel_launch.pool_backward(g, r, spatial_scale, pooled_height, pooled_width, shape)
    return gx.to(grad.dtype)


@_ps_roi_pool_backward_op.register_fake
def _(grad, rois, spatial_scale, pooled_height, pooled_width, batch_size, channels, height, width):
    return grad.new_empty((batch_size, channels, height, width))


def _setup_context(ctx, inputs, output) -> None:
    input, rois, spatial_scale, ph, pw = inputs
    ctx.save_for_backward(rois)
    ctx.args = (spatial_scale, ph, pw, *input.shape)


def _backward(ctx, grad: Tensor):
    (rois,) = ctx.saved_tensors
    gx = _ps_roi_pool_backward_op(grad, rois, *ctx.args)
    return gx, None, None, None, None


def _setup_context_bwd(ctx, inputs, output) -> None:
    _, rois, spatial_scale, ph, pw = inputs[:5]
    ctx.save_for_backward(rois)
    ctx.args = (spatial_scale, ph, pw)


def _backward_bwd(ctx, grad_grad: Tensor):
    # The op is linear in the input: the adjoint of the backward is the forward.
    (rois,) = ctx.saved_tensors
    gg = _ps_roi_pool_op(grad_grad, rois, *ctx.args)
    return gg, None, None, None, None, None, None, None, None


_ps_roi_pool_op.register_autograd(_backward, setup_context=_setup_context)
_ps_roi_pool_backward_op.register_autograd(_backward_bwd, setup_context=_setup_context_bwd)


# A leaf of torch.fx graphs (as torchvision marks its ops): symbolic tracing records one call
# instead of running the argument checks on proxies; the checks run when the graph runs.
@torch.fx.wrap
def ps_roi_pool(
    input: Tensor,
    boxes: Tensor | list[Tensor],
    output_size: int | tuple[int, int],
    spatial_scale: float = 1.0,
) -> Tensor:
    """Position-sensitive RoI pooling (R-FCN), torchvision's ``ps_roi_pool`` semantics.

    Args:
        input (Tensor[N, C, H, W]): score maps, C divisible by ``output_h * output_w``.
        boxes (Tensor[K, 5] or List[Tensor[L, 4]]): RoIs ``(batch index, x1, y1, x2, y2)`` in
            input-image coordinates, or per-image boxes ``(x1, y1, x2, y2)``.
        output_size (int or Tuple[int, int]): ``(h, w)`` bins.
        spatial_scale (float): factor from box coordinates to the map (e.g. 1/16).

    Returns:
        Tensor[K, C/(h*w), h, w]: output channel ``c`` of bin ``(i, j)`` averages input channel
        ``(c*h + i)*w + j`` over the bin; empty bins give 0.

    Bit-identical to torchvision on CPU in float32 and float64 (coordinates rounded half away
    from zero after scaling in the input dtype, bins floor/ceil, clipped to ``[0, H-1]`` x
    ``[0, W-1]``). float16/bfloat16 inputs (and autocast) are computed in float32 and returned
    in the input dtype.

    Difference from torchvision: the backward is the exact gradient of this forward. torchvision's
    backward clips bins to ``[0, H]`` while its forward clips to ``[0, H-1]``, so for boxes
    touching the bottom/right border its gradient is wrong (gradcheck fails); elsewhere the
    gradients agree.

    Raises ValueError/TypeError (naming the argument) for bad ranks or box shapes, C not
    divisible, dtype/device mismatch, batch index out of range or non-finite boxes.
    """
    ph, pw = roi_args.output_hw(output_size)
    scale = roi_args.check_scale(spatial_scale)
    rois = roi_args.boxes_to_rois(boxes)
    roi_args.check_input(input, rois, ph, pw)
    return _ps_roi_pool_op(input, rois, scale, ph, pw)


class PSRoIPool(nn.Module):
    """See :func:`ps_roi_pool`."""

    def __init__(self, output_size: int | tuple[int, int], spatial_scale: float) -> None:
        super().__init__()
        self.output_size = output_size
        self.spatial_scale = spatial_scale

    def forward(self, input: Tensor, rois: Tensor | list[Tensor]) -> Tensor:
        return ps_roi_pool(input, rois, self.output_size, self.spatial_scale)

    def extra_repr(self) -> str:
        return f"output_size={self.output_size}, spatial_scale={self.spatial_scale}"
