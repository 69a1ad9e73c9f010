"""Numba CPU kernels for position-sensitive RoI pooling and RoI align (no torch here).

Shape shorthand: N images, C input channels (= C_out * PH * PW), H x W feature map,
K RoIs, PH x PW output bins. Input plane ``p = (c_out * PH + ph) * PW + pw`` feeds exactly
bin (c_out, ph, pw) of every RoI, so all kernels loop plane-at-a-time (``prange`` over the
C planes, RoIs inside): one 10 KB plane stays in cache while every RoI reads it, and the
per-bin summation order is the one of torchvision's CPU kernel, which keeps the forward
passes bit-identical to it.

Every kernel takes C-contiguous arrays of one float dtype T (float32 or float64) and computes
in T like torchvision does (``roi * spatial_scale`` included), so numba compiles one version
per dtype. ``rois`` is ``T[K, 5]`` (batch index, x1, y1, x2, y2), already validated by the
caller: finite, batch index in ``[0, N)``.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

# Rounded box coordinates are clamped to +-2**40 before the int conversion: far outside any
# feature map (so results are unchanged) and far from int64 overflow.
_COORD_LIMIT = 2.0**40


@njit(cache=True, inline="always")
def _round_half_away(v):
    """C ``round``: half away from zero (numba's ``round`` is half to even)."""
    t = np.trunc(v)
    d = v - t  # exact
    if d >= 0.5:
        t += 1
    elif d <= -0.5:
        t -= 1
    return int(min(max(t, -_COORD_LIMIT), _COORD_LIMIT))


@njit(cache=True)
def pool_bins(rois, spatial_scale, height, width, pooled_h, pooled_w):
    """Integer bin bounds of every RoI, clipped like torchvision's forward to ``[0, H-1]``.

    Returns ``(batch int64[K], h0, h1 int64[K, PH], w0, w1 int64[K, PW])``; bin (ph, pw)
    of RoI k covers rows ``[h0[k, ph], h1[k, ph])`` and columns ``[w0[k, pw], w1[k, pw])``.
    """
    t = rois.dtype.type
    k_rois = rois.shape[0]
    batch = np.empty(k_rois, np.int64)
    h0 = np.empty((k_rois, pooled_h), np.int64)
    h1 = np.empty((k_rois, pooled_h), np.int64)
    w0 = np.empty((k_rois, pooled_w), np.int64)
    w1 = np.empty((k_rois, pooled_w), np.int64)
    for n in range(k_rois):
        batch[n] = int(rois[n, 0])
        start_w = _round_half_away(rois[n, 1] * spatial_scale)
        start_h = _round_half_away(rois[n, 2] * spatial_scale)
        end_w = _round_half_away(rois[n, 3] * spatial_scale)
        end_h = _round_half_away(rois[n, 4] * spatial_scale)
        # too small RoIs are forced to 1x1
        bin_h = t(max(end_h - start_h, 1)) / t(pooled_h)
        bin_w = t(max(end_w - start_w, 1)) / t(pooled_w)
        for ph in range(pooled_h):
            lo = int(np.floor(t(ph) * bin_h)) + start_h
            hi = int(np.ceil(t(ph + 1) * bin_h)) + start_h
            h0[n, ph] = min(max(lo, 0), height - 1)
            h1[n, ph] = min(max(hi, 0), height - 1)
        for pw in range(pooled_w):
            lo = int(np.floor(t(pw) * bin_w)) + start_w
            hi = int(np.ceil(t(pw + 1) * bin_w)) + start_w
            w0[n, pw] = min(max(lo, 0), width - 1)
            w1[n, pw] = min(max(hi, 0), width - 1)
    return batch, h0, h1, w0, w1


@njit(parallel=True, cache=True)
def ps_roi_pool_forward(x, rois, spatial_scale, pooled_h, pooled_w, out):
    """``out[K, C_out, PH, PW]`` = mean of each bin over its plane (0 for an empty bin).

    x: T[N, C, H, W]; rois: T[K, 5]; out: T[K, C_out, PH, PW] (written).
    """
    t = x.dtype.type
    n_img, channels, height, width = x.shape
    k_rois = rois.shape[0]
    batch, h0, h1, w0, w1 = pool_bins(rois, spatial_scale, height, width, pooled_h, pooled_w)
    out2 = out.reshape(k_rois, channels)
    for p in prange(channels):
        ph = (p // pooled_w) % pooled_h
        pw = p % pooled_w
        for n in range(k_rois):
            b = batch[n]
            hs = h0[n, ph]
            he = h1[n, ph]
            ws = w0[n, pw]
            we = w1[n, pw]
            if he <= hs or we <= ws:
                out2[n, p] = t(0)
                continue
            acc = t(0)
            for h in range(hs, he):
                for w in range(ws, we):
                    acc += x[b, p, h, w]
            out2[n, p] = acc / t((he - hs) * (we - ws))
    return out


@njit(parallel=True, cache=True)
def ps_roi_pool_backward(grad, rois, spatial_scale, pooled_h, pooled_w, grad_x):
    """Gradient of :func:`ps_roi_pool_forward` w.r.t. ``x``, written into ``grad_x``.

    grad: T[K, C_out, PH, PW]; grad_x: T[N, C, H, W] (overwritten). Each plane accumulates
    ``grad / area`` at the four corners of every bin in a float64 2-D difference array and
    integrates it once, so the cost does not grow with the bin area.
    """
    t = grad_x.dtype.type
    n_img, channels, height, width = grad_x.shape
    k_rois = rois.shape[0]
    batch, h0, h1, w0, w1 = pool_bins(rois, spatial_scale, height, width, pooled_h, pooled_w)
    g2 = grad.reshape(k_rois, channels)
    for p in prange(channels):
        ph = (p // pooled_w) % pooled_h
        pw = p % pooled_w
        diff = np.zeros((n_img, height + 1, width + 1), np.float64)
        for n in range(k_rois):
            hs = h0[n, ph]
            he = h1[n, ph]
            ws = w0[n, pw]
            we = w1[n, pw]
            if he <= hs or we <= ws:
                continue
            v = np.float64(g2[n, p]) / np.float64((he - hs) * (we - ws))
            b = batch[n]
            diff[b, hs, ws] += v
            diff[b, hs, we] -= v
            diff[b, he, ws] -= v
            diff[b, he, we] += v
        for b in range(n_img):
            for h in range(height):
                run = 0.0
                for w in range(width):
                    run += diff[b, h, w]
                    if h > 0:
                        diff[b, h, w] = run + diff[b, h - 1, w]
                    else:
                        diff[b, h, w] = run
                    grad_x[b, p, h, w] = t(diff[b, h, w])
    return grad_x


@njit(inline="always")
def _axis_samples(start, bin_size, grid, n_bins, limit, lo, hi, frac, valid, base):
    """Bilinear sample positions along one axis, exactly as torchvision computes them.

    Fills ``lo/hi`` (int64 neighbours), ``frac`` (the weight of ``hi``) and ``valid`` (inside
    ``[-1, limit]``) at ``base + bin * grid + i`` for every bin and sample ``i``.
    """
    t = frac.dtype.type
    for b in range(n_bins):
        bstart = t(b) * bin_size + start
        for i in range(grid):
            v = bstart + t(i + 0.5) * bin_size / t(grid)
            j = base + b * grid + i
            if not (v >= -1.0 and v <= limit):
                valid[j] = False
                lo[j] = 0
                hi[j] = 0
                frac[j] = t(0)
                continue
            valid[j] = True
            if v <= 0:
                v = t(0)
            low = int(v)
            if low >= limit - 1:
                low = limit - 1
                high = low
                v = t(low)
            else:
                high = low + 1
            lo[j] = low
            hi[j] = high
            frac[j] = v - t(low)


@njit(cache=True)
def align_samples(rois, spatial_scale, height, width, pooled_h, pooled_w, sampling_ratio):
    """Per-RoI sampling grids of PS RoI align (ragged, flattened).

    Returns ``(batch[K], gh[K], gw[K], yoff[K], xoff[K], ylo, yhi, ly, yok, xlo, xhi, lx, xok)``:
    RoI k has ``gh[k] x gw[k]`` samples per bin; the y samples of bin ph are at
    ``yoff[k] + ph * gh[k] + iy`` in the flat arrays (likewise x).
    An adaptive grid of ``ceil(size / bins) <= 0`` samples (reversed or empty box) is
    clamped to 0: such bins are empty and give 0 (torchvision divides 0 by the sample count,
    which gives NaN when it is 0).
    """
    t = rois.dtype.type
    k_rois = rois.shape[0]
    batch = np.empty(k_rois, np.int64)
    gh = np.empty(k_rois, np.int64)
    gw = np.empty(k_rois, np.int64)
    yoff = np.empty(k_rois + 1, np.int64)
    xoff = np.empty(k_rois + 1, np.int64)
    yoff[0] = 0
    xoff[0] = 0
    half = t(0.5)
    for n in range(k_rois):
        roi_h = (rois[n, 4] * spatial_scale - half) - (rois[n, 2] * spatial_scale - half)
        roi_w = (rois[n, 3] * spatial_scale - half) - (rois[n, 1] * spatial_scale - half)
        if sampling_ratio > 0:
            gh[n] = sampling_ratio
            gw[n] = sampling_ratio
        else:
            gh[n] = max(int(min(np.ceil(roi_h / t(pooled_h)), 1e6)), 0)
            gw[n] = max(int(min(np.ceil(roi_w / t(pooled_w)), 1e6)), 0)
        yoff[n + 1] = yoff[n] + pooled_h * gh[n]
        xoff[n + 1] = xoff[n] + pooled_w * gw[n]
    ylo = np.empty(yoff[k_rois], np.int64)
    yhi = np.empty(yoff[k_rois], np.int64)
    ly = np.empty(yoff[k_rois], rois.dtype)
    yok = np.empty(yoff[k_rois], np.bool_)
    xlo = np.empty(xoff[k_rois], np.int64)
    xhi = np.empty(xoff[k_rois], np.int64)
    lx = np.empty(xoff[k_rois], rois.dtype)
    xok = np.empty(xoff[k_rois], np.bool_)
    for n in range(k_rois):
        batch[n] = int(rois[n, 0])
        start_w = rois[n, 1] * spatial_scale - half
        start_h = rois[n, 2] * spatial_scale - half
        roi_w = (rois[n, 3] * spatial_scale - half) - start_w
        roi_h = (rois[n, 4] * spatial_scale - half) - start_h
        bin_h = roi_h / t(pooled_h)
        bin_w = roi_w / t(pooled_w)
        _axis_samples(start_h, bin_h, gh[n], pooled_h, height, ylo, yhi, ly, yok, yoff[n])
        _axis_samples(start_w, bin_w, gw[n], pooled_w, width, xlo, xhi, lx, xok, xoff[n])
    return batch, gh, gw, yoff, xoff, ylo, yhi, ly, yok, xlo, xhi, lx, xok


@njit(parallel=True, cache=True)
def ps_roi_align_forward(x, rois, spatial_scale, pooled_h, pooled_w, sampling_ratio, out):
    """``out[K, C_out, PH, PW]`` = mean of the bilinear samples of each bin.

    x: T[N, C, H, W]; rois: T[K, 5]; out: T[K, C_out, PH, PW] (written).
    """
    t = x.dtype.type
    n_img, channels, height, width = x.shape
    k_rois = rois.shape[0]
    batch, gh, gw, yoff, xoff, ylo, yhi, ly, yok, xlo, xhi, lx, xok = align_samples(
        rois, spatial_scale, height, width, pooled_h, pooled_w, sampling_ratio
    )
    out2 = out.reshape(k_rois, channels)
    one = t(1)
    for p in prange(channels):
        ph = (p // pooled_w) % pooled_h
        pw = p % pooled_w
        for n in range(k_rois):
            b = batch[n]
            ny = gh[n]
            nx = gw[n]
            y0 = yoff[n] + ph * ny
            x0 = xoff[n] + pw * nx
            acc = t(0)
            for iy in range(y0, y0 + ny):
                fy = ly[iy]
                gy = one - fy
                for ix in range(x0, x0 + nx):
                    if yok[iy] and xok[ix]:
                        fx = lx[ix]
                        gx = one - fx
                        val = (
                            (gy * gx) * x[b, p, ylo[iy], xlo[ix]]
                            + (gy * fx) * x[b, p, ylo[iy], xhi[ix]]
                            + (fy * gx) * x[b, p, yhi[iy], xlo[ix]]
                            + (fy * fx) * x[b, p, yhi[iy], xhi[ix]]
                        )
                        acc += val
                    else:
                        acc += t(0)
            out2[n, p] = acc / t(ny * nx) if ny * nx > 0 else t(0)
    return out


@njit(parallel=True, cache=True)
def ps_roi_align_backward(grad, rois, spatial_scale, pooled_h, pooled_w, sampling_ratio, grad_x):
    """Gradient of :func:`ps_roi_align_forward` w.r.t. ``x``, written into ``grad_x``.

    grad: T[K, C_out, PH, PW]; grad_x: T[N, C, H, W] (must be zero on entry). Each thread owns
    whole planes, so the scatter needs no atomics.
    """
    t = grad_x.dtype.type
    n_img, channels, height, width = grad_x.shape
    k_rois = rois.shape[0]
    batch, gh, gw, yoff, xoff, ylo, yhi, ly, yok, xlo, xhi, lx, xok = align_samples(
        rois, spatial_scale, height, width, pooled_h, pooled_w, sampling_ratio
    )
    g2 = grad.reshape(k_rois, channels)
    one = t(1)
    for p in prange(channels):
        ph = (p // pooled_w) % pooled_h
        pw = p % pooled_w
        for n in range(k_rois):
            b = batch[n]
            ny = gh[n]
            nx = gw[n]
            y0 = yoff[n] + ph * ny
            x0 = xoff[n] + pw * nx
            g = g2[n, p]
            count = t(ny * nx)
            for iy in range(y0, y0 + ny):
                if not yok[iy]:
                    continue
                fy = ly[iy]
                gy = one - fy
                for ix in range(x0, x0 + nx):
                    if not xok[ix]:
                        continue
                    fx = lx[ix]
                    gx = one - fx
                    grad_x[b, p, ylo[iy], xlo[ix]] += g * (gy * gx) / count
                    grad_x[b, p, ylo[iy], xhi[ix]] += g * (gy * fx) / count
                    grad_x[b, p, yhi[iy], xlo[ix]] += g * (fy * gx) / count
                    grad_x[b, p, yhi[iy], xhi[ix]] += g * (fy * fx) / count
    return grad_x
