"""Numba-CUDA kernels for position-sensitive RoI pooling and RoI align (no torch here).

Shape shorthand: N images, C input channels (= C_out * PH * PW), H x W feature map,
K RoIs, PH x PW output bins. One thread per output element (cuda_grid.py); the gradient
kernels scatter with ``cuda.atomic.add`` (float32/float64: Numba has no half-precision
atomic add, so fp16/bf16 are computed in float32 by the caller). Arithmetic follows the CPU
kernels (psroi_cpu.py) and torchvision, in the dtype T of the arrays (float32 or float64).
"""

from __future__ import annotations

import math

from numba import cuda
from rfcn.kernels.cuda_grid import decode, launch

_COORD_LIMIT = 2.0**40
_MAX_GRID = 1_000_000


@cuda.jit(device=True, inline=True)
def _round_half_away(v):
    """C ``round`` (half away from zero) of a finite value, as an int."""
    v = min(max(v, -_COORD_LIMIT), _COORD_LIMIT)
    t = math.floor(v) if v >= 0 else math.ceil(v)
    d = v - t
    if d >= 0.5:
        t += 1
    elif d <= -0.5:
        t -= 1
    return t


@cuda.jit(device=True, inline=True)
def _pool_bin(roi_start, roi_end, i, n_bins, limit, t):
    """``[lo, hi)`` of bin ``i`` along one axis, clipped to ``[0, limit-1]``."""
    size = t(max(roi_end - roi_start, 1)) / t(n_bins)
    lo = int(math.floor(t(i) * size)) + roi_start
    hi = int(math.ceil(t(i + 1) * size)) + roi_start
    lo = min(max(lo, 0), limit - 1)
    hi = min(max(hi, 0), limit - 1)
    return lo, hi


@cuda.jit(cache=True)
def _pool_forward_kernel(x, rois, spatial_scale, pooled_h, pooled_w, out):
    t = x.dtype.type
    height = x.shape[2]
    width = x.shape[3]
    c_out = out.shape[1]
    idx = cuda.grid(1)
    if idx >= out.size:
        return
    n, co, ph, pw, p = decode(idx, c_out, pooled_h, pooled_w)
    b = int(rois[n, 0])
    sw = _round_half_away(rois[n, 1] * spatial_scale)
    sh = _round_half_away(rois[n, 2] * spatial_scale)
    ew = _round_half_away(rois[n, 3] * spatial_scale)
    eh = _round_half_away(rois[n, 4] * spatial_scale)
    hs, he = _pool_bin(sh, eh, ph, pooled_h, height, t)
    ws, we = _pool_bin(sw, ew, pw, pooled_w, width, t)
    if he <= hs or we <= ws:
        out[n, co, ph, pw] = t(0)
        return
    acc = t(0)
    for h in range(hs, he):
        for w in range(ws, we):
            acc += x[b, p, h, w]
    out[n, co, ph, pw] = acc / t((he - hs) * (we - ws))


@cuda.jit(cache=True)
def _pool_backward_kernel(grad, rois, spatial_scale, pooled_h, pooled_w, grad_x):
    t = grad_x.dtype.type
    height = grad_x.shape[2]
    width = grad_x.shape[3]
    c_out = grad.shape[1]
    idx = cuda.grid(1)
    if idx >= grad.size:
        return
    n, co, ph, pw, p = decode(idx, c_out, pooled_h, pooled_w)
    b = int(rois[n, 0])
    sw = _round_half_away(rois[n, 1] * spatial_scale)
    sh = _round_half_away(rois[n, 2] * spatial_scale)
    ew = _round_half_away(rois[n, 3] * spatial_scale)
    eh = _round_half_away(rois[n, 4] * spatial_scale)
    hs, he = _pool_bin(sh, eh, ph, pooled_h, height, t)
    ws, we = _pool_bin(sw, ew, pw, pooled_w, width, t)
    if he <= hs or we <= ws:
        return
    v = grad[n, co, ph, pw] / t((he - hs) * (we - ws))
    for h in range(hs, he):
        for w in range(ws, we):
            cuda.atomic.add(grad_x, (b, p, h, w), v)


@cuda.jit(device=True, inline=True)
def _axis_sample(start, bin_size, i, grid, k, limit, t):
    """Sample ``k`` of bin ``i``: ``(ok, low, high, frac)`` of the bilinear neighbours."""
    v = t(i) * bin_size + start + t(k + 0.5) * bin_size / t(grid)
    if not (v >= -1.0 and v <= limit):
        return False, 0, 0, t(0)
    if v <= 0:
        v = t(0)
    low = int(v)
    if low >= limit - 1:
        low = limit - 1
        return True, low, low, t(0)
    return True, low, low + 1, v - t(low)


@cuda.jit(device=True, inline=True)
def _align_geometry(rois, n, spatial_scale, pooled_h, pooled_w, sampling_ratio, t):
    half = t(0.5)
    start_w = rois[n, 1] * spatial_scale - half
    start_h = rois[n, 2] * spatial_scale - half
    roi_w = (rois[n, 3] * spatial_scale - half) - start_w
    roi_h = (rois[n, 4] * spatial_scale - half) - start_h
    bin_h = roi_h / t(pooled_h)
    bin_w = roi_w / t(pooled_w)
    if sampling_ratio > 0:
        gh = sampling_ratio
        gw = sampling_ratio
    else:
        # <= 0 samples (reversed or empty box): an empty bin, 0 (torchvision: NaN)
        gh = max(int(min(math.ceil(roi_h / t(pooled_h)), _MAX_GRID)), 0)
        gw = max(int(min(math.ceil(roi_w / t(pooled_w)), _MAX_GRID)), 0)
    return start_h, start_w, bin_h, bin_w, gh, gw


@cuda.jit(cache=True)
def _align_forward_kernel(x, rois, spatial_scale, pooled_h, pooled_w, sampling_ratio, out):
    t = x.dtype.type
    height = x.shape[2]
    width = x.shape[3]
    c_out = out.shape[1]
    idx = cuda.grid(1)
    if idx >= out.size:
        return
    n, co, ph, pw, p = decode(idx, c_out, pooled_h, pooled_w)
    b = int(rois[n, 0])
    start_h, start_w, bin_h, bin_w, gh, gw = _align_geometry(
        rois, n, spatial_scale, pooled_h, pooled_w, sampling_ratio, t
    )
    if gh * gw == 0:
        out[n, co, ph, pw] = t(0)
        return
    one = t(1)
    acc = t(0)
    for iy in range(gh):
        yok, y0, y1, fy = _axis_sample(start_h, bin_h, ph, gh, iy, height, t)
        for ix in range(gw):
            xok, x0, x1, fx = _axis_sample(start_w, bin_w, pw, gw, ix, width, t)
            if yok and xok:
                gy = one - fy
                gx = one - fx
                acc += (
                    (gy * gx) * x[b, p, y0, x0]
                    + (gy * fx) * x[b, p, y0, x1]
                    + (fy * gx) * x[b, p, y1, x0]
                    + (fy * fx) * x[b, p, y1, x1]
                )
    out[n, co, ph, pw] = acc / t(gh * gw)


@cuda.jit(cache=True)
def _align_backward_kernel(grad, rois, spatial_scale, pooled_h, pooled_w, sampling_ratio, grad_x):
    t = grad_x.dtype.type
    height = grad_x.shape[2]
    width = grad_x.shape[3]
    c_out = grad.shape[1]
    idx = cuda.grid(1)
    if idx >= grad.size:
        return
    n, co, ph, pw, p = decode(idx, c_out, pooled_h, pooled_w)
    b = int(rois[n, 0])
    start_h, start_w, bin_h, bin_w, gh, gw = _align_geometry(
        rois, n, spatial_scale, pooled_h, pooled_w, sampling_ratio, t
    )
    if gh * gw == 0:
        return
    one = t(1)
    g = grad[n, co, ph, pw]
    count = t(gh * gw)
    for iy in range(gh):
        yok, y0, y1, fy = _axis_sample(start_h, bin_h, ph, gh, iy, height, t)
        if not yok:
            continue
        for ix in range(gw):
            xok, x0, x1, fx = _axis_sample(start_w, bin_w, pw, gw, ix, width, t)
            if not xok:
                continue
            gy = one - fy
            gx = one - fx
            cuda.atomic.add(grad_x, (b, p, y0, x0), g * (gy * gx) / count)
            cuda.atomic.add(grad_x, (b, p, y0, x1), g * (gy * fx) / count)
            cuda.atomic.add(grad_x, (b, p, y1, x0), g * (fy * gx) / count)
            cuda.atomic.add(grad_x, (b, p, y1, x1), g * (fy * fx) / count)


def pool_forward(x, rois, spatial_scale, pooled_h, pooled_w, out, stream=0):
    """x: T[N, C, H, W], rois: T[K, 5] (validated) -> out: T[K, C_out, PH, PW] (written)."""
    scale = x.dtype.type(spatial_scale)
    launch(_pool_forward_kernel, out.size, stream, x, rois, scale, pooled_h, pooled_w, out)


def pool_backward(grad, rois, spatial_scale, pooled_h, pooled_w, grad_x, stream=0):
    """grad: T[K, C_out, PH, PW] -> grad_x: T[N, C, H, W] (zero on entry, accumulated)."""
    scale = grad.dtype.type(spatial_scale)
    launch(_pool_backward_kernel, grad.size, stream, grad, rois, scale, pooled_h, pooled_w, grad_x)


def align_forward(x, rois, spatial_scale, pooled_h, pooled_w, sampling_ratio, out, stream=0):
    """x: T[N, C, H, W], rois: T[K, 5] (validated) -> out: T[K, C_out, PH, PW] (written)."""
    scale = x.dtype.type(spatial_scale)
    args = (x, rois, scale, pooled_h, pooled_w, sampling_ratio, out)
    launch(_align_forward_kernel, out.size, stream, *args)


def align_backward(grad, rois, spatial_scale, pooled_h, pooled_w, sampling_ratio, grad_x, stream=0):
    """grad: T[K, C_out, PH, PW] -> grad_x: T[N, C, H, W] (zero on entry, accumulated)."""
    scale = grad.dtype.type(spatial_scale)
    args = (grad, rois, scale, pooled_h, pooled_w, sampling_ratio, grad_x)
    launch(_align_backward_kernel, grad.size, stream, *args)
