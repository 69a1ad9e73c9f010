"""Numba CPU kernels for deformable position-sensitive RoI pooling (no torch here).

Semantics of the ``DeformablePSROIPooling`` operator of Deformable-ConvNets (MXNet,
``deformable_psroi_pooling.cu``) with group size = part size = output size; the torch wrapper
(rfcn/ops/deform_ps_roi_pool.py) documents them and the few places where we differ.

Shape shorthand: N images, C = C_out * G input channels, G = PH * PW bins, H x W map, K RoIs,
M offset classes (M divides C_out, E = C_out / M output channels per class), S samples per
bin side (``sample_per_part``). ``offsets`` is ``T[K, 2M, PH, PW]``: class m of RoI k shifts
bin (ph, pw) by ``(offsets[k, 2m], offsets[k, 2m + 1]) * trans_std * (roi_w, roi_h)``.

Sample positions depend on (RoI, class, bin) only, and are separable: the x positions of a
bin depend on its x shift, the y positions on its y shift, and a sample counts iff both its x
and y are inside the map. So the kernels work on items (class m, bin g): an item computes the
S x- and S y-positions of every RoI once (keeping those inside the map, packed), then loops
over its E channels (plane ``p = (c * PH + ph) * PW + pw``) and RoIs. An item owns its planes
of ``grad_x`` and its entries ``[:, 2m:2m + 2, ph, pw]`` of the offset gradient, so the
backward needs no atomics.

The scalar arithmetic (geometry, sample positions, bilinear weights and their derivatives) is
deform_sampling.py's, shared with the CUDA kernels.

Every kernel takes C-contiguous arrays of one float dtype T (float32 or float64) and computes
in T like the original; ``rois`` is ``T[K, 5]`` (batch index, x1, y1, x2, y2), validated by the
caller (finite, batch index in ``[0, N)``), and so are the offsets (finite).
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange
from rfcn.kernels import deform_sampling as sampling


@njit(cache=True)
def roi_geometry(rois, spatial_scale, pooled_h, pooled_w, samples):
    """Per-RoI sampling geometry, in the dtype T of ``rois`` (arithmetic of the original).

    Returns ``(batch int64[K], geo T[K, 8])``, the columns of ``geo`` being ``start_w,
    start_h, roi_w, roi_h, bin_w, bin_h, sub_w, sub_h`` (deform_sampling.box_geometry).
    """
    t = rois.dtype.type
    batch = np.empty(rois.shape[0], np.int64)
    geo = np.empty((rois.shape[0], 8), rois.dtype)
    for n in range(rois.shape[0]):
        batch[n] = int(rois[n, 0])
        x1, y1, x2, y2 = rois[n, 1], rois[n, 2], rois[n, 3], rois[n, 4]
        g = sampling.box_geometry(x1, y1, x2, y2, spatial_scale, pooled_h, pooled_w, samples, t)
        for j in range(8):
            geo[n, j] = g[j]
    return batch, geo


@njit(cache=True)
def part_index(n_bins, like):
    """``floor(i / n_bins * part_size)`` in the dtype of ``like`` (part size = ``n_bins``), as
    the original computes it: ``i`` for ``n_bins <= 21``, but for some larger sizes the float
    product falls just below ``i`` and bin ``i`` reads the offsets of part ``i - 1``."""
    t = like.dtype.type
    parts = np.empty(n_bins, np.int64)
    for i in range(n_bins):
        parts[i] = sampling.part(i, n_bins, t)
    return parts


@njit(cache=True)
def _plan(x, rois, offsets, has_offsets, spatial_scale, pooled, samples):
    """What both passes start from: ``(per_cls, n_items, batch, geo, parts)``, the E channels
    of an offset class, the M * G items, the RoI geometry (:func:`roi_geometry`) and the parts
    ``(int64[PH], int64[PW])`` of the bin rows and columns (:func:`part_index`)."""
    n_bins = pooled[0] * pooled[1]
    n_cls = offsets.shape[1] // 2 if has_offsets else 1
    batch, geo = roi_geometry(rois, spatial_scale, pooled[0], pooled[1], samples)
    parts = (part_index(pooled[0], x), part_index(pooled[1], x))
    return x.shape[1] // n_bins // n_cls, n_cls * n_bins, batch, geo, parts


@njit(cache=True)
def _work_arrays(n_workers, k_rois, samples, like):
    """Per-worker sample arrays, the axis (y, x) second: ``lo``, ``hi`` (int64), ``frac`` (the
    dtype of ``like``) and ``code`` (int8), each ``[n_workers, 2, K * S]``, and ``run``
    ``[n_workers, 2, K, 2]`` (int64)."""
    size = (n_workers, 2, k_rois * samples)
    return (
        np.zeros(size, np.int64),
        np.zeros(size, np.int64),
        np.zeros(size, like.dtype),
        np.zeros(size, np.int8),
        np.zeros((n_workers, 2, k_rois, 2), np.int64),
    )


@njit(inline="always")
def _worker_rows(work, w):
    """Worker ``w``'s arrays of :func:`_work_arrays`: ``(lo, hi, frac, code, run)`` of the y
    axis, then of the x axis."""
    lo, hi, frac, code, run = work
    return (
        lo[w, 0], hi[w, 0], frac[w, 0], code[w, 0], run[w, 0],
        lo[w, 1], hi[w, 1], frac[w, 1], code[w, 1], run[w, 1],
    )  # fmt: skip


@njit(inline="always")
def _axis_samples(start, sub, samples, limit, lo, hi, frac, code, run, n):
    """The S samples along one bin axis of RoI ``n`` (map size ``limit``), sample 0 at
    ``start``, into slots ``n * S + s``: bilinear neighbours ``lo``/``hi``, weight ``frac`` of
    ``hi``, ``code``. ``run[n] = (first slot, count)`` of those inside the map: positions grow
    with ``s``, so they are one run."""
    t = frac.dtype.type
    base = n * samples
    first = samples
    n_in = 0
    for s in range(samples):
        c, low, high, f = sampling.axis_sample(start, s, sub, limit, t)
        code[base + s] = c
        lo[base + s] = low
        hi[base + s] = high
        frac[base + s] = f
        if c != sampling.OUT:
            first = min(first, s)
            n_in += 1
    run[n, 0] = base + first
    run[n, 1] = n_in


@njit(cache=True)
def _sample_item(i, offsets, has_offsets, trans_std, geo, parts, samples, x, ws):
    """Item ``i`` = class ``i // G``, bin ``i % G`` (``parts = (int64[PH], int64[PW])``, see
    :func:`part_index`): its samples for every RoI on the input ``x``, into the worker arrays
    ``ws`` (:func:`_worker_rows`). Returns the item ``(m, ph, pw, qh, qw)``: class, bin and
    part of its offsets. A plain call from the parallel loop: inlined there, its sampling
    loop measured twice as slow."""
    t = geo.dtype.type
    pooled_h, pooled_w = parts[0].shape[0], parts[1].shape[0]
    m = i // (pooled_h * pooled_w)
    ph = (i // pooled_w) % pooled_h
    pw = i % pooled_w
    qh = parts[0][ph]
    qw = parts[1][pw]
    for n in range(geo.shape[0]):
        tx = t(0)
        ty = t(0)
        if has_offsets:
            tx = offsets[n, 2 * m, qh, qw] * trans_std
            ty = offsets[n, 2 * m + 1, qh, qw] * trans_std
        hstart = sampling.bin_start(ph, geo[n, 5], geo[n, 1], ty * geo[n, 3], t)
        wstart = sampling.bin_start(pw, geo[n, 4], geo[n, 0], tx * geo[n, 2], t)
        _axis_samples(hstart, geo[n, 7], samples, x.shape[2], ws[0], ws[1], ws[2], ws[3], ws[4], n)
        _axis_samples(wstart, geo[n, 6], samples, x.shape[3], ws[5], ws[6], ws[7], ws[8], ws[9], n)
    return m, ph, pw, qh, qw


@njit(inline="always")
def _planes(item, pooled, per_cls):
    """The input planes ``p = c * G + g`` of ``item``: bin g of its class's E channels c."""
    n_bins = pooled[0] * pooled[1]
    g = item[1] * pooled[1] + item[2]
    return range(item[0] * per_cls * n_bins + g, (item[0] + 1) * per_cls * n_bins, n_bins)


@njit(inline="always")
def _slots(run, n):
    """The slots of RoI ``n``'s samples inside the map along one axis."""
    return range(run[n, 0], run[n, 0] + run[n, 1])


@njit(inline="always")
def _at(lo, hi, frac, code, j):
    """``(lo, hi, frac, code)`` of slot ``j`` of an axis."""
    return lo[j], hi[j], frac[j], code[j]


@njit(inline="always")
def _corners(x, b, p, y0, y1, x0, x1):
    """``(u00, u01, u10, u11)`` of plane ``p`` of image ``b``."""
    return x[b, p, y0, x0], x[b, p, y1, x0], x[b, p, y0, x1], x[b, p, y1, x1]


@njit(cache=True)
def _forward_item(x, batch, planes, ws, out_rows):
    """``out_rows[:, p]`` for the ``planes`` p of an item, from its samples ``ws``: the mean of
    the bilinear samples inside the map, 0 if none is. ``out_rows`` is out viewed as
    ``[K, C_out * G]`` (column p = plane p)."""
    t = x.dtype.type
    one = t(1)
    ylo, yhi, fy, yk, yrun, xlo, xhi, fx, xk, xrun = ws
    for p in planes:
        for n in range(batch.shape[0]):
            b = batch[n]
            acc = t(0)
            for iy in _slots(yrun, n):
                y0, y1, dy, _ = _at(ylo, yhi, fy, yk, iy)
                for ix in _slots(xrun, n):
                    x0, x1, dx, _ = _at(xlo, xhi, fx, xk, ix)
                    acc += sampling.bilinear(_corners(x, b, p, y0, y1, x0, x1), dy, dx, one)
            count = yrun[n, 1] * xrun[n, 1]
            out_rows[n, p] = acc / t(count) if count > 0 else t(0)


@njit(parallel=True, cache=True)
def deform_forward(
    x, rois, offsets, has_offsets, spatial_scale, trans_std, pooled_h, pooled_w, samples, out,
    n_workers,
):  # fmt: skip
    """``out[K, C_out, PH, PW]`` = mean of the bilinear samples of each (shifted) bin inside
    the map, 0 when none is.

    x: T[N, C, H, W]; rois: T[K, 5]; offsets: T[K, 2M, PH, PW] (ignored unless
    ``has_offsets``; then M = 1); out: T[K, C_out, PH, PW] (written).
    """
    pooled = (pooled_h, pooled_w)
    per_cls, n_items, batch, geo, parts = _plan(
        x, rois, offsets, has_offsets, spatial_scale, pooled, samples
    )
    # Strided reads of offsets and writes of out (one per RoI and item) measured as fast as
    # transposing them into item-major rows: the misses overlap, transposes stream twice.
    out_rows = out.reshape(rois.shape[0], x.shape[1])
    work = _work_arrays(n_workers, rois.shape[0], samples, x)
    # The loop bodies are plain njit functions (parfor lowering of large bodies compiles
    # slowly); a tuple of scalars made outside the loop cannot enter it (parfor).
    for w in prange(n_workers):
        ws = _worker_rows(work, w)
        for i in range(w, n_items, n_workers):
            item = _sample_item(i, offsets, has_offsets, trans_std, geo, parts, samples, x, ws)
            planes = _planes(item, (pooled_h, pooled_w), per_cls)
            _forward_item(x, batch, planes, ws, out_rows)
    return out


@njit(cache=True)
def _backward_item(grad_rows, x, batch, planes, ws, want_offsets, grad_x, sums):
    """Zero and fill the ``planes`` p of an item in ``grad_x`` and, if ``want_offsets``, set
    ``sums[0/1, n]`` to the gradient w.r.t. the x/y position of RoI n's bin (``[2, K]``).
    ``grad_rows`` is the output gradient viewed as ``[K, C_out * G]``. The sample arrays are
    read one by one and the x run is taken before the loops: measured faster than :func:`_at`
    here (the stores into ``grad_x`` may alias them, so what the loops read is read again)."""
    t = x.dtype.type
    one = t(1)
    ylo, yhi, fy, yk, yrun, xlo, xhi, fx, xk, xrun = ws
    sums[:] = t(0)
    for p in planes:
        for b in range(x.shape[0]):
            grad_x[b, p] = t(0)
    for p in planes:
        for n in range(batch.shape[0]):
            count = yrun[n, 1] * xrun[n, 1]
            if count == 0:
                continue
            dv = grad_rows[n, p] / t(count)
            b = batch[n]
            sx = t(0)
            sy = t(0)
            x_slots = _slots(xrun, n)
            for iy in _slots(yrun, n):
                cy = yk[iy]
                y0 = ylo[iy]
                y1 = yhi[iy]
                dy = fy[iy]
                for ix in x_slots:
                    cx = xk[ix]
                    x0 = xlo[ix]
                    x1 = xhi[ix]
                    dx = fx[ix]
                    w00, w01, w10, w11 = sampling.corner_weights(dy, dx, one)
                    grad_x[b, p, y0, x0] += w00 * dv
                    grad_x[b, p, y1, x0] += w01 * dv
                    grad_x[b, p, y0, x1] += w10 * dv
                    grad_x[b, p, y1, x1] += w11 * dv
                    if want_offsets:
                        u = _corners(x, b, p, y0, y1, x0, x1)
                        x_free, y_free = cx == sampling.FREE, cy == sampling.FREE
                        sx, sy = sampling.add_position_grads(sx, sy, u, dy, dx, x_free, y_free, one)
            if want_offsets:
                sums[0, n] += sx * dv
                sums[1, n] += sy * dv


@njit(cache=True)
def _offset_grads(item, sums, trans_std, geo, bins):
    """``bins[:, 2m:2m + 2, ph, pw]`` of ``item`` from the position gradients ``sums``:
    d(position) / d(offset) = trans_std * roi size."""
    m, ph, pw, _, _ = item
    for n in range(geo.shape[0]):
        bins[n, 2 * m, ph, pw] = sums[0, n] * trans_std * geo[n, 2]
        bins[n, 2 * m + 1, ph, pw] = sums[1, n] * trans_std * geo[n, 3]


@njit(parallel=True, cache=True)
def deform_backward(
    grad, x, rois, offsets, has_offsets, want_offsets, spatial_scale, trans_std, pooled_h,
    pooled_w, samples, grad_x, grad_offsets, n_workers,
):  # fmt: skip
    """Gradients of :func:`deform_forward` w.r.t. ``x`` and (if ``want_offsets``) ``offsets``.

    grad: T[K, C_out, PH, PW]; x: T[N, C, H, W]; grad_x: T[N, C, H, W] (overwritten);
    grad_offsets: T[K, 2M, PH, PW] (overwritten; any shape unless ``want_offsets``).
    A sample clamped to the border (position in ``[-0.5, 0)`` or ``(limit - 1, limit - 0.5]``)
    has no derivative w.r.t. its position along that axis.
    """
    t = x.dtype.type
    pooled = (pooled_h, pooled_w)
    per_cls, n_items, batch, geo, parts = _plan(
        x, rois, offsets, has_offsets, spatial_scale, pooled, samples
    )
    parts_h, parts_w = parts
    identity = True
    for i in range(pooled_h):
        identity = identity and parts_h[i] == i
    for i in range(pooled_w):
        identity = identity and parts_w[i] == i
    # offset gradients per bin, folded onto the parts below when two bins share a part
    # (output sizes >= 22, see part_index)
    bins = grad_offsets if identity or not want_offsets else np.empty_like(grad_offsets)
    grad_rows = grad.reshape(rois.shape[0], x.shape[1])
    work = _work_arrays(n_workers, rois.shape[0], samples, x)
    sums = np.zeros((n_workers, 2, rois.shape[0]), x.dtype)
    for w in prange(n_workers):
        ws = _worker_rows(work, w)
        scratch = sums[w]
        for i in range(w, n_items, n_workers):
            item = _sample_item(i, offsets, has_offsets, trans_std, geo, parts, samples, x, ws)
            planes = _planes(item, (pooled_h, pooled_w), per_cls)
            _backward_item(grad_rows, x, batch, planes, ws, want_offsets, grad_x, scratch)
            if want_offsets:
                _offset_grads(item, scratch, trans_std, geo, bins)
    if want_offsets and not identity:
        grad_offsets[:] = t(0)
        for n in range(rois.shape[0]):
            for c in range(grad_offsets.shape[1]):
                for ph in range(pooled_h):
                    for pw in range(pooled_w):
                        grad_offsets[n, c, parts_h[ph], parts_w[pw]] += bins[n, c, ph, pw]
    return grad_x
