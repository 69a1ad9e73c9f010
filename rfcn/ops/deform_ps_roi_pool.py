"""Deformable position-sensitive RoI pooling (Deformable ConvNets, Dai et al. 2017), registered
as the custom op ``rfcn::deform_ps_roi_pool``.

Shape shorthand: N images, C channels, H x W map, K RoIs, PH x PW bins, C_out = C/(PH*PW),
M offset classes (M divides C_out), S = ``sample_per_part``.

Differences from the original operator (Deformable-ConvNets' ``DeformablePSROIPooling``):

- Where a sample is clamped (``x`` in ``[-0.5, 0)`` or ``(W-1, W-0.5]``, same for y), its
  derivative w.r.t. that coordinate, hence w.r.t. the offset, is 0; the original backward
  ignores the clamp and uses the bilinear slope there.
- At an integer sample coordinate we use the right derivative of the interpolation; the
  original gives 0 there (its neighbours are ``floor`` and ``ceil``, equal). Same forward.
- A sample whose coordinate is NaN (only from boxes so large that the geometry overflows
  the dtype) is skipped; the original would clamp it to 0.
- Rectangular ``output_size`` (the original has one ``pooled_size``): part size = output
  size per axis. Like the original, the part of bin ``i`` is ``floor(i / h * h)`` computed
  in the compute dtype, which is ``i`` for sizes up to 21; for some larger sizes it falls
  just below ``i`` and such a bin reads the offsets of part ``i - 1`` (the original's
  behaviour, kept; it depends on the dtype).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from rfcn.ops import deform_launch, roi_args
from rfcn.ops.deform_launch import DeformArgs
from rfcn.ops.ps_roi_pool import compute_dtype


def _as_compute(
    x: Tensor, rois: Tensor, offsets: Tensor | None
) -> tuple[Tensor, Tensor, Tensor | None]:
    dt = compute_dtype(x.dtype)
    off = None if offsets is None else offsets.to(dt).contiguous()
    return x.to(dt).contiguous(), rois.to(dt).contiguous(), off


def _check_offset_values(offsets: Tensor | None) -> None:
    """Finite offsets (one host sync; min/max propagate NaN and need no boolean copy)."""
    if offsets is None or offsets.numel() == 0:
        return
    lo, hi = torch.aminmax(offsets)
    if not bool(torch.isfinite(lo) & torch.isfinite(hi)):
        raise ValueError("offsets must be finite")


# The op's arguments in the schema language (the one torch would infer from annotations,
# ``int`` being ``SymInt``), written once: the backward op takes them too, after its own.
_ARGS = (
    "Tensor input, Tensor rois, Tensor? offsets, float spatial_scale, float trans_std, "
    "SymInt pooled_height, SymInt pooled_width, SymInt sample_per_part"
)


@torch.library.custom_op("rfcn::deform_ps_roi_pool", mutates_args=(), schema=f"({_ARGS}) -> Tensor")
def _deform_op(input: Tensor, rois: Tensor, offsets: Tensor | None, *args: float) -> Tensor:
    """``args``: the numbers of deform_launch.DeformArgs."""
    roi_args.check_roi_values(rois, input.shape[0])
    _check_offset_values(offsets)
    x, r, off = _as_compute(input, rois, offsets)
    out = deform_launch.forward(x, r, off, DeformArgs(*args))
    return out.to(input.dtype)


@_deform_op.register_fake
def _(input, rois, offsets, spatial_scale, trans_std, pooled_height, pooled_width, samples):
    c_out = input.shape[1] // (pooled_height * pooled_width)
    return input.new_empty((rois.shape[0], c_out, pooled_height, pooled_width))


@torch.library.custom_op(
    "rfcn::deform_ps_roi_pool_backward",
    mutates_args=(),
    schema=f"(Tensor grad, bool offsets_grad, {_ARGS}) -> (Tensor, Tensor)",
)
def _deform_backward_op(
    grad: Tensor,
    offsets_grad: bool,
    input: Tensor,
    rois: Tensor,
    offsets: Tensor | None,
    *args: float,
) -> tuple[Tensor, Tensor]:
    """-> (grad_input Tensor[N, C, H, W], grad_offsets Tensor[K, 2M, PH, PW], or Tensor[0]
    unless ``offsets_grad``)."""
    x, r, off = _as_compute(input, rois, offsets)
    g = grad.to(x.dtype).contiguous()
    gx, go = deform_launch.backward(g, x, r, off, DeformArgs(*args), offsets_grad)
    go_dtype = offsets.dtype if offsets is not None else grad.dtype
    return gx.to(input.dtype), go.to(go_dtype)


@_deform_backward_op.register_fake
def _(grad, offsets_grad, input, rois, offsets, *args):
    gx = input.new_empty(input.shape)
    if offsets is not None and offsets_grad:
        return gx, offsets.new_empty(offsets.shape)
    return gx, grad.new_empty((0,))


def _setup_context(ctx, inputs, output) -> None:
    input, rois, offsets, *args = inputs
    ctx.save_for_backward(input, rois, offsets)
    ctx.args = tuple(args)


def _backward(ctx, grad: Tensor):
    input, rois, offsets = ctx.saved_tensors
    want_offsets = offsets is not None and ctx.needs_input_grad[2]
    gx, go = _deform_backward_op(grad, want_offsets, input, rois, offsets, *ctx.args)
    gx = gx if ctx.needs_input_grad[0] else None
    return gx, None, go if want_offsets else None, *(None for _ in ctx.args)


def _setup_context_bwd(ctx, inputs, output) -> None:
    pass


def _backward_bwd(ctx, *grads: Tensor):
    raise NotImplementedError(
        "deform_ps_roi_pool: double backward (a gradient of the gradient) is not implemented"
    )


_deform_op.register_autograd(_backward, setup_context=_setup_context)
_deform_backward_op.register_autograd(_backward_bwd, setup_context=_setup_context_bwd)


def _check_trans_std(trans_std: float) -> float:
    if isinstance(trans_std, bool) or not isinstance(trans_std, (int, float)):
        raise TypeError(f"trans_std must be a float, got {type(trans_std)}")
    if not (math.isfinite(trans_std) and trans_std >= 0):
        raise ValueError(f"trans_std must be finite and >= 0, got {trans_std}")
    return float(trans_std)


def _check_sample_per_part(sample_per_part: int) -> int:
    if isinstance(sample_per_part, bool) or not isinstance(sample_per_part, int):
        raise TypeError(f"sample_per_part must be an int, got {type(sample_per_part)}")
    if not 1 <= sample_per_part <= roi_args.MAX_SAMPLES_PER_SIDE:
        raise ValueError(
            f"sample_per_part must be in [1, {roi_args.MAX_SAMPLES_PER_SIDE}], "
            f"got {sample_per_part}"
        )
    return sample_per_part


def _check_offsets(offsets: Tensor | None, input: Tensor, rois: Tensor, ph: int, pw: int) -> None:
    """Shape, dtype and device of ``offsets`` (Tensor[K, 2M, PH, PW], M dividing C_out)."""
    if offsets is None:
        return
    if not isinstance(offsets, Tensor):
        raise TypeError(f"offsets must be a Tensor or None, got {type(offsets)}")
    if offsets.dim() != 4:
        raise ValueError(f"offsets must have shape [K, 2*M, PH, PW], got {list(offsets.shape)}")
    k, two_m, oh, ow = offsets.shape
    if k != rois.shape[0] or (oh, ow) != (ph, pw):
        raise ValueError(
            f"offsets must have shape [K={rois.shape[0]}, 2*M, PH={ph}, PW={pw}], "
            f"got {list(offsets.shape)}"
        )
    c_out = input.shape[1] // (ph * pw)
    if two_m == 0 or two_m % 2 or c_out % (two_m // 2):
        raise ValueError(
            f"offsets: dim 1 must be 2*M (x and y per offset class) with M dividing "
            f"C_out={c_out}, got {two_m}"
        )
    if not offsets.is_floating_point():
        raise TypeError(f"offsets must be a floating-point Tensor, got {offsets.dtype}")
    if offsets.device != input.device:
        raise ValueError(f"offsets are on {offsets.device} but input is on {input.device}")
    if offsets.dtype != input.dtype and not torch.is_autocast_enabled(input.device.type):
        raise TypeError(f"offsets dtype {offsets.dtype} must equal input dtype {input.dtype}")


# A leaf of torch.fx graphs (as torchvision marks its ops): symbolic tracing records one call
# instead of running the argument checks on proxies; the checks run when the graph runs.
@torch.fx.wrap
def deform_ps_roi_pool(
    input: Tensor,
    rois: Tensor | list[Tensor],
    offsets: Tensor | None,
    output_size: int | tuple[int, int],
    spatial_scale: float = 1.0,
    trans_std: float = 0.1,
    sample_per_part: int = 4,
) -> Tensor:
    """Deformable position-sensitive RoI pooling: Deformable-ConvNets' ``DeformablePSROIPooling``
    (MXNet, ``deformable_psroi_pooling.cu``) with group size = part size = output size.

    Args:
        input (Tensor[N, C, H, W]): score maps, C divisible by ``output_h * output_w``.
        rois (Tensor[K, 5] or List[Tensor[L, 4]]): RoIs ``(batch index, x1, y1, x2, y2)`` in
            input-image coordinates, or per-image boxes ``(x1, y1, x2, y2)``.
        offsets (Tensor[K, 2*M, h, w] or None): normalised shifts of each bin; channels
            ``2m`` (x) and ``2m + 1`` (y) serve offset class ``m``, i.e. the output channels
            ``[m * C_out/M, (m + 1) * C_out/M)``. M = C_out: a shift per class and bin; M = 1:
            one per bin shared by all channels. None: no shift (``no_trans``).
        output_size (int or Tuple[int, int]): ``(h, w)`` bins.
        spatial_scale (float): factor from box coordinates to the map (e.g. 1/16).
        trans_std (float): scale of the offsets (``>= 0``).
        sample_per_part (int): bilinear samples per bin side (S).

    Returns:
        Tensor[K, C/(h*w), h, w]. For output channel ``c`` of bin ``(i, j)`` of RoI ``k``:
        ``start = round(x1) * scale - 0.5``, ``roi_w = max((round(x2) + 1) * scale - 0.5 -
        start, 0.1)`` (C ``round``, half away from zero, before scaling; same for y),
        ``bin = roi / (h, w)``; the bin starts at ``j * bin_w + start_w + offsets[k, 2m, i, j]
        * trans_std * roi_w`` (same for y with ``2m + 1``) and has S x S samples spaced
        ``bin / S``. A sample outside ``[-0.5, W - 0.5] x [-0.5, H - 0.5]`` is skipped, others
        are clamped to ``[0, W-1] x [0, H-1]`` and read bilinearly from input channel
        ``(c*h + i)*w + j``; the bin is the mean of its samples, 0 if none is inside.

    The backward gives gradients w.r.t. ``input`` and ``offsets`` (none w.r.t. ``rois``), the
    exact gradient of this forward (float64 gradcheck passes). float16/bfloat16 inputs (and
    autocast) are computed in float32 and returned in the input dtype. Double backward is not
    implemented (NotImplementedError). Where we differ from the original: see the module.

    Raises ValueError/TypeError (naming the argument) for bad ranks or box shapes, C not
    divisible, offsets of the wrong shape, dtype or device (or M not dividing C_out), dtype or
    device mismatch, batch index out of range, non-finite boxes or offsets, a bad
    ``trans_std`` or ``sample_per_part`` (in ``[1, 1024]``).
    """
    ph, pw = roi_args.output_hw(output_size)
    scale = roi_args.check_scale(spatial_scale)
    std = _check_trans_std(trans_std)
    samples = _check_sample_per_part(sample_per_part)
    boxes = roi_args.boxes_to_rois(rois)
    roi_args.check_input(input, boxes, ph, pw)
    _check_offsets(offsets, input, boxes, ph, pw)
    return _deform_op(input, boxes, offsets, scale, std, ph, pw, samples)


class DeformPSRoIPool(nn.Module):
    """See :func:`deform_ps_roi_pool`."""

    def __init__(
        self,
        output_size: int | tuple[int, int],
        spatial_scale: float,
        trans_std: float = 0.1,
        sample_per_part: int = 4,
    ) -> None:
        super().__init__()
        self.output_size = output_size
        self.spatial_scale = spatial_scale
        self.trans_std = trans_std
        self.sample_per_part = sample_per_part

    def forward(
        self, input: Tensor, rois: Tensor | list[Tensor], offsets: Tensor | None = None
    ) -> Tensor:
        return deform_ps_roi_pool(
            input,
            rois,
            offsets,
            self.output_size,
            self.spatial_scale,
            self.trans_std,
            self.sample_per_part,
        )

    def extra_repr(self) -> str:
        return (
            f"output_size={self.output_size}, spatial_scale={self.spatial_scale}, "
            f"trans_std={self.trans_std}, sample_per_part={self.sample_per_part}"
        )
