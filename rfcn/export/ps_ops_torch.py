"""PS RoI pooling and PS RoI align written with plain tensor ops, for export.

Shape shorthand: N images, C channels, H x W map, K RoIs, PH x PW bins, C_out = C/(PH*PW).

`rfcn.ops.ps_roi_pool` / `ps_roi_align` are custom ops with Numba kernels: torch.export keeps
them as calls to ``torch.ops.rfcn.*`` (fine in a .pt2 file, which needs rfcn to run), but an
ONNX runtime knows nothing of them. These functions compute the same numbers with ops every
exporter maps to standard ONNX operators (Gather, CumSum, Floor, Ceil, Where, ...), so an
exported graph runs on a stock onnxruntime without a custom-op library. Same convention as
the kernels (torchvision's): output channel ``c`` of bin ``(i, j)`` reads input channel
``(c*PH + i)*PW + j``.

- Pooling: coordinates rounded half away from zero after scaling (in the input dtype), bins
  floor/ceil, clipped to ``[0, H-1]`` x ``[0, W-1]``, empty bin -> 0, mean over the bin. Bin
  sums come from an integral image (two CumSums in float64, so cancellation stays far below
  float32 rounding) read at the four corners of each bin.
- Align, fixed ``sampling_ratio > 0`` (the model's): the bilinear samples of each bin
  gathered from the bin's own channel only, with torchvision's half-pixel offset and border
  rules.
- Align, adaptive ``sampling_ratio <= 0`` (a per-RoI number of samples, no static shape):
  torchvision's ``roi_align(aligned=True)`` over all C channels (ONNX ``RoiAlign``,
  ``coordinate_transformation_mode="half_pixel"``, ``sampling_ratio=0``: the same grid,
  half-pixel offset and border rules, checked numerically), then each bin's own channel
  group is selected. It samples PH*PW times more values than the gather form.

All agree with the kernels to float rounding (the kernels sum in the input dtype), border,
reversed and empty boxes included.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torchvision.ops import roi_align

from rfcn.ops import roi_args

__all__ = ["ps_roi_align_torch", "ps_roi_pool_torch"]

# Rounded box coordinates are clamped like the kernels' before the int64 conversion.
_COORD_LIMIT = 2.0**40


def _round_half_away(v: Tensor) -> Tensor:
    """C ``round`` (half away from zero) of a float tensor, as int64; ``v - trunc(v)`` is exact."""
    t = torch.where(v >= 0, torch.floor(v), torch.ceil(v))
    d = v - t
    t = t + (d >= 0.5).to(v.dtype) - (d <= -0.5).to(v.dtype)
    return t.clamp(-_COORD_LIMIT, _COORD_LIMIT).to(torch.int64)


def _pool_bounds(
    start: Tensor, end: Tensor, bins: int, limit: int, dtype: torch.dtype
) -> tuple[Tensor, Tensor]:
    """int64 Tensor[K] rounded box sides -> (lo, hi) int64 Tensor[K, bins], clipped to
    ``[0, limit-1]`` (the kernels' and torchvision's forward convention)."""
    size = (end - start).clamp(min=1).to(dtype) / bins
    b = torch.arange(bins, dtype=dtype, device=start.device)
    lo = torch.floor(b * size[:, None]).to(torch.int64) + start[:, None]
    hi = torch.ceil((b + 1) * size[:, None]).to(torch.int64) + start[:, None]
    return lo.clamp(0, limit - 1), hi.clamp(0, limit - 1)


def _bin_planes(rois: Tensor, channels: int, ph: int, pw: int) -> Tensor:
    """int64 Tensor[K, C_out, PH, PW]: the plane ``b*C + (c*PH + i)*PW + j`` each bin reads."""
    c_out = channels // (ph * pw)
    batch = rois[:, 0].to(torch.int64).reshape(-1, 1, 1, 1)
    chan = torch.arange(c_out * ph * pw, device=rois.device).reshape(1, c_out, ph, pw)
    return batch * channels + chan


def ps_roi_pool_torch(
    input: Tensor, rois: Tensor, output_size: int | tuple[int, int], spatial_scale: float
) -> Tensor:
    """Same as `rfcn.ops.ps_roi_pool` for ``rois`` Tensor[K, 5], built from tensor ops.

    Args:
        input (Tensor[N, C, H, W]): score maps, C divisible by ``PH * PW``.
        rois (Tensor[K, 5]): ``(batch index, x1, y1, x2, y2)`` in input-image coordinates.
        output_size (int or Tuple[int, int]): ``(PH, PW)`` bins.
        spatial_scale (float): factor from box coordinates to the map.

    Returns:
        Tensor[K, C_out, PH, PW] in the input dtype.
    """
    ph, pw = roi_args.output_hw(output_size)
    _, channels, height, width = input.shape
    r = rois.to(input.dtype) * spatial_scale
    x1, y1, x2, y2 = (_round_half_away(r[:, i]) for i in range(1, 5))
    hs, he = _pool_bounds(y1, y2, ph, height, input.dtype)  # [K, PH]
    ws, we = _pool_bounds(x1, x2, pw, width, input.dtype)  # [K, PW]
    # integral[p, y, x] = sum of plane p over rows < y and columns < x
    integral = input.to(torch.float64).cumsum(2).cumsum(3)
    integral = torch.nn.functional.pad(integral, (1, 0, 1, 0)).reshape(-1)
    row = width + 1
    base = _bin_planes(rois, channels, ph, pw) * ((height + 1) * row)
    top, bottom = (hs * row)[:, None, :, None], (he * row)[:, None, :, None]
    left, right = ws[:, None, None, :], we[:, None, None, :]
    total = (integral[base + bottom + right] - integral[base + top + right]
             - integral[base + bottom + left] + integral[base + top + left])
    dh, dw = (he - hs)[:, None, :, None], (we - ws)[:, None, None, :]
    area = (dh * dw).clamp(min=1).to(torch.float64)
    mean = torch.where((dh > 0) & (dw > 0), total / area, torch.zeros_like(total))
    return mean.to(input.dtype)


def _align_axis(
    start: Tensor, end: Tensor, bins: int, grid: int, limit: int
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Bilinear neighbours of the samples along one axis, as the kernels compute them.

    start, end: Tensor[K] box sides on the map (half-pixel offset applied) ->
    (lo, hi) int64 Tensor[K, bins, grid], (w_lo, w_hi) Tensor[K, bins, grid] weights, zero
    for a sample outside ``[-1, limit]``.
    """
    dtype = start.dtype
    size = (end - start) / bins
    b = torch.arange(bins, dtype=dtype, device=start.device)[None, :, None]
    g = torch.arange(grid, dtype=dtype, device=start.device)[None, None, :] + 0.5
    v = (b * size[:, None, None] + start[:, None, None]) + g * size[:, None, None] / grid
    inside = (v >= -1.0) & (v <= limit)
    v = v.clamp(min=0)
    lo = torch.floor(v).to(torch.int64)
    at_edge = lo >= limit - 1
    lo = torch.where(at_edge, torch.full_like(lo, limit - 1), lo)
    hi = torch.where(at_edge, lo, lo + 1)
    frac = torch.where(at_edge, torch.zeros_like(v), v - lo.to(dtype))
    zero = torch.zeros_like(v)
    return lo, hi, torch.where(inside, 1 - frac, zero), torch.where(inside, frac, zero)


def ps_roi_align_torch(
    input: Tensor,
    rois: Tensor,
    output_size: int | tuple[int, int],
    spatial_scale: float,
    sampling_ratio: int,
) -> Tensor:
    """Same as `rfcn.ops.ps_roi_align` for ``rois`` Tensor[K, 5], built from tensor ops.

    Args:
        input (Tensor[N, C, H, W]): score maps, C divisible by ``PH * PW``.
        rois (Tensor[K, 5]): ``(batch index, x1, y1, x2, y2)`` in input-image coordinates.
        output_size (int or Tuple[int, int]): ``(PH, PW)`` bins.
        spatial_scale (float): factor from box coordinates to the map.
        sampling_ratio (int): bilinear samples per bin side (S); ``<= 0``: adaptive.

    Returns:
        Tensor[K, C_out, PH, PW] in the input dtype.
    """
    ph, pw = roi_args.output_hw(output_size)
    if sampling_ratio <= 0:
        return _align_all_channels(input, rois, ph, pw, spatial_scale)
    _, channels, height, width = input.shape
    s = sampling_ratio
    r = rois.to(input.dtype) * spatial_scale - 0.5
    ylo, yhi, wy_lo, wy_hi = _align_axis(r[:, 2], r[:, 4], ph, s, height)  # [K, PH, S]
    xlo, xhi, wx_lo, wx_hi = _align_axis(r[:, 1], r[:, 3], pw, s, width)  # [K, PW, S]
    flat = input.reshape(-1)
    # index layout [K, C_out, PH, PW, S (y), S (x)]
    base = (_bin_planes(rois, channels, ph, pw) * (height * width))[..., None, None]
    rows = [(y * width)[:, None, :, None, :, None] for y in (ylo, yhi)]
    cols = [x[:, None, None, :, None, :] for x in (xlo, xhi)]
    wys = [w[:, None, :, None, :, None] for w in (wy_lo, wy_hi)]
    wxs = [w[:, None, None, :, None, :] for w in (wx_lo, wx_hi)]
    total = None
    for row, wy in zip(rows, wys, strict=True):
        for col, wx in zip(cols, wxs, strict=True):
            term = (wy * wx) * flat[base + row + col]
            total = term if total is None else total + term
    assert total is not None
    return (total.sum(dim=(4, 5)) / (s * s)).to(input.dtype)


def _align_all_channels(input: Tensor, rois: Tensor, ph: int, pw: int, scale: float) -> Tensor:
    """Adaptive PS RoI align: RoI align of every channel, then bin ``q`` of output channel
    ``c`` taken from channel ``c*PH*PW + q`` -> Tensor[K, C_out, PH, PW]."""
    n_bins = ph * pw
    full = roi_align(input, rois.to(input.dtype), (ph, pw), scale, 0, aligned=True)
    k, c_out = full.shape[0], input.shape[1] // n_bins
    full = full.reshape(k, c_out, n_bins, n_bins)  # [K, C_out, group, bin]
    own = torch.arange(n_bins, device=input.device).reshape(1, 1, 1, n_bins)
    return torch.gather(full, 2, own.expand(k, c_out, 1, n_bins)).reshape(k, c_out, ph, pw)
