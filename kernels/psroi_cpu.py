"""Numba CPU kernels for position-sensitive RoI pooling and RoI align (no torch here).

Shape shorthand: N images, C input channels (= C_out * G), G = PH * PW bins, H x W feature
map, K RoIs. Input plane ``p = c * G + g`` (c < C_out, bin ``g = ph * PW + pw``) feeds bin g
of output channel c of every RoI, and all C_out planes of one bin share each RoI's rectangle.
So the kernels work on items (bin g, chunk of channels), spread over ``n_workers`` threads:
an item's planes are copied once into a channels-last tile ``[N, H, W, chunk]`` (~300 KB at
38x63, stays in L2), and each RoI then adds whole channel vectors per pixel (SIMD, one loop
control per RoI and bin instead of per RoI, bin and channel). Each lane still sums its
pixels in torchvision's order (rows, then columns, from 0), so the forward passes stay
bit-identical to torchvision. Results are gathered in a ``[G, K, C_out]`` buffer and
transposed once into ``[K, C_out, G]``; scratch is allocated once per call and worker.

Every kernel takes C-contiguous arrays of one float dtype T (float32 or float64) and computes
in T like torchvision does (``roi * spatial_scale`` included), so numba compiles one version
per dtype. ``rois`` is ``T[K, 5]`` (batch index, x1, y1, x2, y2), already validated by the
caller: finite, batch index in ``[0, N)``. Gradients accumulate in T, except the difference
arrays of large pooling bins (float64: their +v/-v corners would cancel badly in float32).
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


# Channels per work item: a tile [H, W, chunk] of one image stays in L2 (~300 KB at 38x63).
_CHUNK_BYTES = 128


@njit(inline="always")
def _chunks(c_out, itemsize):
    """``(chunk, n_chunks)``: channels per work item and how many items cover C_out."""
    chunk = max(_CHUNK_BYTES // itemsize, 1)
    if c_out <= chunk:
        return c_out, 1
    return chunk, (c_out + chunk - 1) // chunk


@njit(inline="always")
def _load_tile(x, g, n_groups, c0, tile):
    """``tile[b, h, w, c] = x[b, (c0 + c) * G + g, h, w]``: channels-last, row by row."""
    n_img, _, height, width = x.shape
    cw = tile.shape[3]
    for b in range(n_img):
        for h in range(height):
            for c in range(cw):
                p = (c0 + c) * n_groups + g
                for w in range(width):
                    tile[b, h, w, c] = x[b, p, h, w]


@njit(inline="always")
def _store_tile(tile, g, n_groups, c0, grad_x):
    """``grad_x[b, (c0 + c) * G + g, h, w] = tile[b, h, w, c]`` (cast to grad_x's dtype)."""
    t = grad_x.dtype.type
    n_img, _, height, width = grad_x.shape
    cw = tile.shape[3]
    for b in range(n_img):
        for h in range(height):
            for c in range(cw):
                p = (c0 + c) * n_groups + g
                for w in range(width):
                    grad_x[b, p, h, w] = t(tile[b, h, w, c])


@njit(parallel=True, cache=True)
def _groups_to_output(buf, out):
    """``out[k, c, g] = buf[g, k, c]`` (out viewed as ``[K, C_out, G]``)."""
    n_groups, k_rois, c_out = buf.shape
    out3 = out.reshape(k_rois, c_out, n_groups)
    for n in prange(k_rois):
        for g in range(n_groups):
            for c in range(c_out):
                out3[n, c, g] = buf[g, n, c]


@njit(parallel=True, cache=True)
def _output_to_groups(grad, n_groups):
    """``[K, C_out, PH, PW]`` -> ``[G, K, C_out]``."""
    k_rois, c_out = grad.shape[0], grad.shape[1]
    g3 = grad.reshape(k_rois, c_out, n_groups)
    buf = np.empty((n_groups, k_rois, c_out), grad.dtype)
    for n in prange(k_rois):
        for g in range(n_groups):
            for c in range(c_out):
                buf[g, n, c] = g3[n, c, g]
    return buf


@njit(parallel=True, cache=True)
def ps_roi_pool_forward(x, rois, spatial_scale, pooled_h, pooled_w, out, n_workers):
    """``out[K, C_out, PH, PW]`` = mean of each bin over its plane (0 for an empty bin).

    x: T[N, C, H, W]; rois: T[K, 5]; out: T[K, C_out, PH, PW] (written).
    """
    t = x.dtype.type
    n_img, channels, height, width = x.shape
    k_rois = rois.shape[0]
    n_groups = pooled_h * pooled_w
    c_out = channels // n_groups
    chunk, n_chunks = _chunks(c_out, x.itemsize)
    batch, h0, h1, w0, w1 = pool_bins(rois, spatial_scale, height, width, pooled_h, pooled_w)
    buf = np.empty((n_groups, k_rois, c_out), x.dtype)
    # per-worker scratch, allocated once per call (fresh large buffers cost page faults)
    tile_size = n_img * height * width * chunk
    tiles = np.empty((n_workers, tile_size), x.dtype)
    accs = np.empty((n_workers, chunk), x.dtype)
    n_items = n_groups * n_chunks
    for worker in prange(n_workers):
        for item in range(worker, n_items, n_workers):
            g = item // n_chunks
            c0 = (item % n_chunks) * chunk
            cw = min(chunk, c_out - c0)
            ph = g // pooled_w
            pw = g % pooled_w
            tile = tiles[worker][: n_img * height * width * cw].reshape((n_img, height, width, cw))
            _load_tile(x, g, n_groups, c0, tile)
            acc = accs[worker][:cw]
            for n in range(k_rois):
                hs = h0[n, ph]
                he = h1[n, ph]
                ws = w0[n, pw]
                we = w1[n, pw]
                dst = buf[g, n, c0 : c0 + cw]
                if he <= hs or we <= ws:
                    dst[:] = t(0)
                    continue
                b = batch[n]
                acc[:] = t(0)
                for h in range(hs, he):
                    for w in range(ws, we):
                        px = tile[b, h, w]
                        for c in range(cw):
                            acc[c] += px[c]
                area = t((he - hs) * (we - ws))
                for c in range(cw):
                    dst[c] = acc[c] / area
    _groups_to_output(buf, out)
    return out


# Pool backward: bins up to this area scatter directly, larger ones via a difference array.
_DIRECT_MAX_AREA = 12


@njit(parallel=True, cache=True)
def ps_roi_pool_backward(grad, rois, spatial_scale, pooled_h, pooled_w, grad_x, n_workers):
    """Gradient of :func:`ps_roi_pool_forward` w.r.t. ``x``, written into ``grad_x``.

    grad: T[K, C_out, PH, PW]; grad_x: T[N, C, H, W] (overwritten). Small bins add
    ``grad / area`` to each of their pixels; larger ones add it at their four corners in a
    float64 2-D difference array, integrated once per work item, so the cost does not grow
    with the bin area.
    """
    t = grad_x.dtype.type
    n_img, channels, height, width = grad_x.shape
    k_rois = rois.shape[0]
    n_groups = pooled_h * pooled_w
    c_out = channels // n_groups
    chunk, n_chunks = _chunks(c_out, grad_x.itemsize)
    batch, h0, h1, w0, w1 = pool_bins(rois, spatial_scale, height, width, pooled_h, pooled_w)
    gbuf = _output_to_groups(grad, n_groups)
    tile_size = n_img * height * width * chunk
    accs = np.empty((n_workers, tile_size), grad_x.dtype)
    valss = np.empty((n_workers, chunk), grad_x.dtype)
    n_items = n_groups * n_chunks
    for worker in prange(n_workers):
        for item in range(worker, n_items, n_workers):
            g = item // n_chunks
            c0 = (item % n_chunks) * chunk
            cw = min(chunk, c_out - c0)
            ph = g // pooled_w
            pw = g % pooled_w
            acc = accs[worker][: n_img * height * width * cw].reshape((n_img, height, width, cw))
            acc[:] = 0
            vals = valss[worker][:cw]
            big = False
            for n in range(k_rois):
                bh = max(h1[n, ph] - h0[n, ph], 0)
                if bh * max(w1[n, pw] - w0[n, pw], 0) > _DIRECT_MAX_AREA:
                    big = True
                    break
            # allocated once (no reassignment inside the parallel loop body)
            d_img = n_img if big else 0
            diff = np.zeros((d_img, height + 1, width + 1, cw), np.float64)
            for n in range(k_rois):
                hs = h0[n, ph]
                he = h1[n, ph]
                ws = w0[n, pw]
                we = w1[n, pw]
                if he <= hs or we <= ws:
                    continue
                b = batch[n]
                gv = gbuf[g, n, c0 : c0 + cw]
                area = (he - hs) * (we - ws)
                if area <= _DIRECT_MAX_AREA:
                    for c in range(cw):
                        vals[c] = gv[c] / t(area)
                    for h in range(hs, he):
                        for w in range(ws, we):
                            px = acc[b, h, w]
                            for c in range(cw):
                                px[c] += vals[c]
                    continue
                inv = 1.0 / np.float64(area)
                for c in range(cw):
                    v = np.float64(gv[c]) * inv
                    diff[b, hs, ws, c] += v
                    diff[b, hs, we, c] -= v
                    diff[b, he, ws, c] -= v
                    diff[b, he, we, c] += v
            if big:
                run = np.empty(cw, np.float64)
                for b in range(n_img):
                    for h in range(height):
                        run[:] = 0.0
                        for w in range(width):
                            for c in range(cw):
                                run[c] += diff[b, h, w, c]
                                if h > 0:
                                    diff[b, h, w, c] = run[c] + diff[b, h - 1, w, c]
                                else:
                                    diff[b, h, w, c] = run[c]
                                acc[b, h, w, c] = t(np.float64(acc[b, h, w, c]) + diff[b, h, w, c])
            _store_tile(acc, g, n_groups, c0, grad_x)
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
def ps_roi_align_forward(
    x, rois, spatial_scale, pooled_h, pooled_w, sampling_ratio, out, n_workers
):
    """``out[K, C_out, PH, PW]`` = mean of the bilinear samples of each bin.

    x: T[N, C, H, W]; rois: T[K, 5]; out: T[K, C_out, PH, PW] (written).
    """
    t = x.dtype.type
    n_img, channels, height, width = x.shape
    k_rois = rois.shape[0]
    n_groups = pooled_h * pooled_w
    c_out = channels // n_groups
    chunk, n_chunks = _chunks(c_out, x.itemsize)
    batch, gh, gw, yoff, xoff, ylo, yhi, ly, yok, xlo, xhi, lx, xok = align_samples(
        rois, spatial_scale, height, width, pooled_h, pooled_w, sampling_ratio
    )
    buf = np.empty((n_groups, k_rois, c_out), x.dtype)
    # per-worker scratch, allocated once per call (fresh large buffers cost page faults)
    tile_size = n_img * height * width * chunk
    tiles = np.empty((n_workers, tile_size), x.dtype)
    accs = np.empty((n_workers, chunk), x.dtype)
    one = t(1)
    n_items = n_groups * n_chunks
    for worker in prange(n_workers):
        for item in range(worker, n_items, n_workers):
            g = item // n_chunks
            c0 = (item % n_chunks) * chunk
            cw = min(chunk, c_out - c0)
            ph = g // pooled_w
            pw = g % pooled_w
            tile = tiles[worker][: n_img * height * width * cw].reshape((n_img, height, width, cw))
            _load_tile(x, g, n_groups, c0, tile)
            acc = accs[worker][:cw]
            for n in range(k_rois):
                ny = gh[n]
                nx = gw[n]
                dst = buf[g, n, c0 : c0 + cw]
                if ny * nx == 0:
                    dst[:] = t(0)
                    continue
                b = batch[n]
                y0 = yoff[n] + ph * ny
                x0 = xoff[n] + pw * nx
                acc[:] = t(0)
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
                        w1 = gy * gx
                        w2 = gy * fx
                        w3 = fy * gx
                        w4 = fy * fx
                        p1 = tile[b, ylo[iy], xlo[ix]]
                        p2 = tile[b, ylo[iy], xhi[ix]]
                        p3 = tile[b, yhi[iy], xlo[ix]]
                        p4 = tile[b, yhi[iy], xhi[ix]]
                        for c in range(cw):
                            acc[c] += w1 * p1[c] + w2 * p2[c] + w3 * p3[c] + w4 * p4[c]
                count = t(ny * nx)
                for c in range(cw):
                    dst[c] = acc[c] / count
    _groups_to_output(buf, out)
    return out


@njit(parallel=True, cache=True)
def ps_roi_align_backward(
    grad, rois, spatial_scale, pooled_h, pooled_w, sampling_ratio, grad_x, n_workers
):
    """Gradient of :func:`ps_roi_align_forward` w.r.t. ``x``, written into ``grad_x``.

    grad: T[K, C_out, PH, PW]; grad_x: T[N, C, H, W] (overwritten). Each thread owns whole
    work items (bin, channel chunk), so the scatter needs no atomics.
    """
    t = grad_x.dtype.type
    n_img, channels, height, width = grad_x.shape
    k_rois = rois.shape[0]
    n_groups = pooled_h * pooled_w
    c_out = channels // n_groups
    chunk, n_chunks = _chunks(c_out, grad_x.itemsize)
    batch, gh, gw, yoff, xoff, ylo, yhi, ly, yok, xlo, xhi, lx, xok = align_samples(
        rois, spatial_scale, height, width, pooled_h, pooled_w, sampling_ratio
    )
    gbuf = _output_to_groups(grad, n_groups)
    tile_size = n_img * height * width * chunk
    accs = np.empty((n_workers, tile_size), grad_x.dtype)
    one = t(1)
    n_items = n_groups * n_chunks
    for worker in prange(n_workers):
        for item in range(worker, n_items, n_workers):
            g = item // n_chunks
            c0 = (item % n_chunks) * chunk
            cw = min(chunk, c_out - c0)
            ph = g // pooled_w
            pw = g % pooled_w
            acc = accs[worker][: n_img * height * width * cw].reshape((n_img, height, width, cw))
            acc[:] = 0
            for n in range(k_rois):
                ny = gh[n]
                nx = gw[n]
                if ny * nx == 0:
                    continue
                b = batch[n]
                y0 = yoff[n] + ph * ny
                x0 = xoff[n] + pw * nx
                count = t(ny * nx)
                gv = gbuf[g, n, c0 : c0 + cw]
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
                        w1 = gy * gx
                        w2 = gy * fx
                        w3 = fy * gx
                        w4 = fy * fx
                        p1 = acc[b, ylo[iy], xlo[ix]]
                        p2 = acc[b, ylo[iy], xhi[ix]]
                        p3 = acc[b, yhi[iy], xlo[ix]]
                        p4 = acc[b, yhi[iy], xhi[ix]]
                        for c in range(cw):
                            v = gv[c]
                            p1[c] += v * w1 / count
                            p2[c] += v * w2 / count
                            p3[c] += v * w3 / count
                            p4[c] += v * w4 / count
            _store_tile(acc, g, n_groups, c0, grad_x)
    return grad_x
