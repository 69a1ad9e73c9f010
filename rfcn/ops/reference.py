"""Float64 reference implementations of the PS RoI ops: plain Python loops over torch ops,
written from the definitions (not from the kernels), differentiable by autograd. Slow; for
tests on tiny inputs only.

Shape shorthand: N images, C channels, H x W map, K RoIs, PH x PW bins, C_out = C/(PH*PW).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


def _round_half_away(v: float) -> int:
    t = math.trunc(v)
    return t + (1 if v - t >= 0.5 else -1 if v - t <= -0.5 else 0)


def ps_roi_pool_ref(
    x: Tensor, rois: Tensor, output_size: tuple[int, int], spatial_scale: float
) -> Tensor:
    """x: float64[N, C, H, W], rois: float64[K, 5] -> float64[K, C_out, PH, PW].

    Bins are clipped to ``[0, H-1] x [0, W-1]`` (torchvision's forward convention).
    """
    ph_n, pw_n = output_size
    n_img, c, h, w = x.shape
    c_out = c // (ph_n * pw_n)
    out = []
    for roi in rois.tolist():
        b = int(roi[0])
        x1, y1, x2, y2 = (_round_half_away(v * spatial_scale) for v in roi[1:])
        bin_h = max(y2 - y1, 1) / ph_n
        bin_w = max(x2 - x1, 1) / pw_n
        vals = []
        for co in range(c_out):
            for i in range(ph_n):
                hs = min(max(math.floor(i * bin_h) + y1, 0), h - 1)
                he = min(max(math.ceil((i + 1) * bin_h) + y1, 0), h - 1)
                for j in range(pw_n):
                    ws = min(max(math.floor(j * bin_w) + x1, 0), w - 1)
                    we = min(max(math.ceil((j + 1) * bin_w) + x1, 0), w - 1)
                    ch = (co * ph_n + i) * pw_n + j
                    if he <= hs or we <= ws:
                        vals.append(x.new_zeros(()))
                    else:
                        vals.append(x[b, ch, hs:he, ws:we].mean())
        out.append(torch.stack(vals).reshape(c_out, ph_n, pw_n))
    if not out:
        return x.new_zeros((0, c_out, ph_n, pw_n))
    return torch.stack(out)


def _bilinear(plane: Tensor, y: float, xx: float) -> Tensor:
    h, w = plane.shape
    if not (-1.0 <= y <= h and -1.0 <= xx <= w):
        return plane.new_zeros(())
    y, xx = max(y, 0.0), max(xx, 0.0)
    y0, x0 = int(y), int(xx)
    if y0 >= h - 1:
        y0 = y1 = h - 1
        y = float(y0)
    else:
        y1 = y0 + 1
    if x0 >= w - 1:
        x0 = x1 = w - 1
        xx = float(x0)
    else:
        x1 = x0 + 1
    ly, lx = y - y0, xx - x0
    return (
        (1 - ly) * (1 - lx) * plane[y0, x0]
        + (1 - ly) * lx * plane[y0, x1]
        + ly * (1 - lx) * plane[y1, x0]
        + ly * lx * plane[y1, x1]
    )


def ps_roi_align_ref(
    x: Tensor,
    rois: Tensor,
    output_size: tuple[int, int],
    spatial_scale: float,
    sampling_ratio: int,
) -> Tensor:
    """x: float64[N, C, H, W], rois: float64[K, 5] -> float64[K, C_out, PH, PW].

    An adaptive grid of ``ceil(size / bins) <= 0`` samples has no samples: the bin is 0.
    """
    ph_n, pw_n = output_size
    n_img, c, h, w = x.shape
    c_out = c // (ph_n * pw_n)
    out = []
    for roi in rois.tolist():
        b = int(roi[0])
        x1, y1, x2, y2 = (v * spatial_scale - 0.5 for v in roi[1:])
        bin_h, bin_w = (y2 - y1) / ph_n, (x2 - x1) / pw_n
        gh = sampling_ratio if sampling_ratio > 0 else max(math.ceil((y2 - y1) / ph_n), 0)
        gw = sampling_ratio if sampling_ratio > 0 else max(math.ceil((x2 - x1) / pw_n), 0)
        vals = []
        for co in range(c_out):
            for i in range(ph_n):
                for j in range(pw_n):
                    plane = x[b, (co * ph_n + i) * pw_n + j]
                    acc = plane.new_zeros(())
                    for iy in range(gh):
                        yy = y1 + i * bin_h + (iy + 0.5) * bin_h / gh
                        for ix in range(gw):
                            xx = x1 + j * bin_w + (ix + 0.5) * bin_w / gw
                            acc = acc + _bilinear(plane, yy, xx)
                    vals.append(acc / (gh * gw) if gh * gw > 0 else acc)
        out.append(torch.stack(vals).reshape(c_out, ph_n, pw_n))
    if not out:
        return x.new_zeros((0, c_out, ph_n, pw_n))
    return torch.stack(out)


def _deform_axis(v: Tensor, limit: int) -> tuple[Tensor, int, int] | None:
    """Bilinear neighbours of one sample coordinate of deformable PS RoI pooling: ``None``
    outside ``[-0.5, limit - 0.5]``; else ``(clamped coordinate, low, high)``. A coordinate
    clamped to ``[0, limit - 1]`` becomes a constant (no derivative)."""
    f = float(v.detach())
    if not (-0.5 <= f <= limit - 0.5):
        return None
    if not (0.0 <= f <= limit - 1):
        f = min(max(f, 0.0), limit - 1.0)
        v = v.new_tensor(f)
    low = math.floor(f)
    return v, low, min(low + 1, limit - 1)


def _deform_roi(roi: list[float], spatial_scale: float) -> tuple[float, float, float, float]:
    """``(start_h, start_w, roi_h, roi_w)`` of a RoI of deformable PS RoI pooling: corners
    rounded (C ``round``) before scaling, ``+ 1`` on the far corner, sizes at least 0.1."""
    x1, y1, x2, y2 = (_round_half_away(v) for v in roi[1:])
    start_w, start_h = x1 * spatial_scale - 0.5, y1 * spatial_scale - 0.5
    roi_w = max((x2 + 1) * spatial_scale - 0.5 - start_w, 0.1)
    roi_h = max((y2 + 1) * spatial_scale - 0.5 - start_h, 0.1)
    return start_h, start_w, roi_h, roi_w


def _deform_bin(
    plane: Tensor, start: tuple[Tensor, Tensor], sub: tuple[float, float], s_n: int
) -> Tensor:
    """Mean of the ``s_n x s_n`` bilinear samples of a bin, ``start + (iy, ix) * sub`` (y, x),
    that are inside the map; 0 if none is."""
    h, w = plane.shape
    acc, count = plane.new_zeros(()), 0
    for iy in range(s_n):
        ya = _deform_axis(start[0] + iy * sub[0], h)
        for ix in range(s_n):
            xa = _deform_axis(start[1] + ix * sub[1], w)
            if ya is None or xa is None:
                continue
            (yv, y0, y1), (xv, x0, x1) = ya, xa
            ly, lx = yv - y0, xv - x0
            acc = acc + (
                (1 - lx) * (1 - ly) * plane[y0, x0]
                + (1 - lx) * ly * plane[y1, x0]
                + lx * (1 - ly) * plane[y0, x1]
                + lx * ly * plane[y1, x1]
            )
            count += 1
    return acc / count if count else acc


def deform_ps_roi_pool_ref(
    x: Tensor,
    rois: Tensor,
    offsets: Tensor | None,
    output_size: tuple[int, int],
    spatial_scale: float,
    trans_std: float,
    sample_per_part: int,
) -> Tensor:
    """x: float64[N, C, H, W], rois: float64[K, 5], offsets: float64[K, 2M, PH, PW] or None
    -> float64[K, C_out, PH, PW]. Deformable-ConvNets' ``DeformablePSROIPooling`` with part
    size = group size = output size; differentiable w.r.t. ``x`` and ``offsets``."""
    ph_n, pw_n = output_size
    c_out = x.shape[1] // (ph_n * pw_n)
    per_cls = c_out // (offsets.shape[1] // 2 if offsets is not None else 1)
    zero = x.new_zeros(())
    out = []
    for k, roi in enumerate(rois.tolist()):
        start_h, start_w, roi_h, roi_w = _deform_roi(roi, spatial_scale)
        bin_h, bin_w = roi_h / ph_n, roi_w / pw_n
        sub = (bin_h / sample_per_part, bin_w / sample_per_part)
        vals = []
        for co in range(c_out):
            m = co // per_cls
            for i in range(ph_n):
                part_i = math.floor(i / ph_n * ph_n)  # the original's float formula
                for j in range(pw_n):
                    part_j = math.floor(j / pw_n * pw_n)
                    if offsets is None:
                        tx = ty = zero
                    else:
                        tx = offsets[k, 2 * m, part_i, part_j] * trans_std
                        ty = offsets[k, 2 * m + 1, part_i, part_j] * trans_std
                    # the original's order of operations (sample positions can sit exactly
                    # on the edges -0.5 and H - 0.5, so the rounding must agree)
                    start = ((i * bin_h + start_h) + ty * roi_h, (j * bin_w + start_w) + tx * roi_w)
                    plane = x[int(roi[0]), (co * ph_n + i) * pw_n + j]
                    vals.append(_deform_bin(plane, start, sub, sample_per_part))
        out.append(torch.stack(vals).reshape(c_out, ph_n, pw_n))
    if not out:
        return x.new_zeros((0, c_out, ph_n, pw_n))
    return torch.stack(out)
