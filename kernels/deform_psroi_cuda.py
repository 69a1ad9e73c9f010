"""Numba-CUDA kernels for deformable position-sensitive RoI pooling (no torch here).

Shape shorthand: N images, C = C_out * PH * PW input channels, H x W map, K RoIs, PH x PW
bins, M offset classes (M divides C_out), S samples per bin side. One thread per output
element (cuda_grid.py), like the original operator (Deformable-ConvNets,
deformable_psroi_pooling.cu). The backward scatters with ``cuda.atomic.add`` into ``grad_x``
(4 per sample) and the offset gradient (2 per thread: the thread sums its samples first).
float32/float64 only: Numba has no half-precision atomic add, so fp16/bf16 are computed in
float32 by the caller. The sampling arithmetic is deform_sampling.py's, shared with the CPU
kernels (deform_psroi_cpu.py), in the dtype T of the arrays; the kernels are not
bit-identical to them (the GPU compiler contracts multiply-adds), only close.
"""

from __future__ import annotations

from numba import cuda
from rfcn.kernels import deform_sampling as sampling
from rfcn.kernels.cuda_grid import decode, launch


@cuda.jit(device=True, inline=True)
def _axis(start, sub, samples, limit, t):
    """``(start, sub, first, stop)`` of a bin axis whose sample 0 is at ``start``: samples
    ``first <= s < stop`` are inside the map (positions grow with ``s``: they are one run)."""
    first = 0
    while first < samples and sampling.axis_sample(start, first, sub, limit, t)[0] == sampling.OUT:
        first += 1
    stop = first
    while stop < samples and sampling.axis_sample(start, stop, sub, limit, t)[0] != sampling.OUT:
        stop += 1
    return start, sub, first, stop


@cuda.jit(device=True, inline=True)
def _element(idx, x, rois, offsets, has_offsets, c_out, args, t):
    """Output element ``idx``: ``((n, co, ph, pw, p), b, ys, xs, (m, qh, qw, roi_h, roi_w))``,
    its indices, image, :func:`_axis` along y and x, offset class, part of its offsets and RoI
    size."""
    spatial_scale, trans_std, pooled_h, pooled_w, samples = args
    n, co, ph, pw, p = decode(idx, c_out, pooled_h, pooled_w)
    start_w, start_h, roi_w, roi_h, bin_w, bin_h, sub_w, sub_h = sampling.box_geometry(
        rois[n, 1], rois[n, 2], rois[n, 3], rois[n, 4], spatial_scale, pooled_h, pooled_w,
        samples, t,
    )  # fmt: skip
    m = 0
    qh = 0
    qw = 0
    tx = t(0)
    ty = t(0)
    if has_offsets:
        m = co // (c_out // (offsets.shape[1] // 2))
        qh = sampling.part(ph, pooled_h, t)
        qw = sampling.part(pw, pooled_w, t)
        tx = offsets[n, 2 * m, qh, qw] * trans_std
        ty = offsets[n, 2 * m + 1, qh, qw] * trans_std
    hstart = sampling.bin_start(ph, bin_h, start_h, ty * roi_h, t)
    wstart = sampling.bin_start(pw, bin_w, start_w, tx * roi_w, t)
    ys = _axis(hstart, sub_h, samples, x.shape[2], t)
    xs = _axis(wstart, sub_w, samples, x.shape[3], t)
    return (n, co, ph, pw, p), int(rois[n, 0]), ys, xs, (m, qh, qw, roi_h, roi_w)


@cuda.jit(cache=True)
def _forward_kernel(
    x, rois, offsets, has_offsets, spatial_scale, trans_std, pooled_h, pooled_w, samples, out
):
    idx = cuda.grid(1)
    if idx >= out.size:
        return
    t = x.dtype.type
    args = (spatial_scale, trans_std, pooled_h, pooled_w, samples)
    (n, co, ph, pw, p), b, ys, xs, _ = _element(
        idx, x, rois, offsets, has_offsets, out.shape[1], args, t
    )
    one = t(1)
    acc = t(0)
    for ih in range(ys[2], ys[3]):
        _, y0, y1, dy = sampling.axis_sample(ys[0], ih, ys[1], x.shape[2], t)
        for iw in range(xs[2], xs[3]):
            _, x0, x1, dx = sampling.axis_sample(xs[0], iw, xs[1], x.shape[3], t)
            u = (x[b, p, y0, x0], x[b, p, y1, x0], x[b, p, y0, x1], x[b, p, y1, x1])
            acc += sampling.bilinear(u, dy, dx, one)
    count = (ys[3] - ys[2]) * (xs[3] - xs[2])
    out[n, co, ph, pw] = acc / t(count) if count > 0 else t(0)


@cuda.jit(cache=True)
def _backward_kernel(
    grad, x, rois, offsets, has_offsets, want_offsets, spatial_scale, trans_std, pooled_h,
    pooled_w, samples, grad_x, grad_offsets,
):  # fmt: skip
    idx = cuda.grid(1)
    if idx >= grad.size:
        return
    t = x.dtype.type
    args = (spatial_scale, trans_std, pooled_h, pooled_w, samples)
    (n, co, ph, pw, p), b, ys, xs, (m, qh, qw, roi_h, roi_w) = _element(
        idx, x, rois, offsets, has_offsets, grad.shape[1], args, t
    )
    count = (ys[3] - ys[2]) * (xs[3] - xs[2])
    if count == 0:
        return
    one = t(1)
    dv = grad[n, co, ph, pw] / t(count)
    sx = sy = t(0)
    for ih in range(ys[2], ys[3]):
        cy, y0, y1, dy = sampling.axis_sample(ys[0], ih, ys[1], x.shape[2], t)
        for iw in range(xs[2], xs[3]):
            cx, x0, x1, dx = sampling.axis_sample(xs[0], iw, xs[1], x.shape[3], t)
            w00, w01, w10, w11 = sampling.corner_weights(dy, dx, one)
            cuda.atomic.add(grad_x, (b, p, y0, x0), w00 * dv)
            cuda.atomic.add(grad_x, (b, p, y1, x0), w01 * dv)
            cuda.atomic.add(grad_x, (b, p, y0, x1), w10 * dv)
            cuda.atomic.add(grad_x, (b, p, y1, x1), w11 * dv)
            if want_offsets:
                u = (x[b, p, y0, x0], x[b, p, y1, x0], x[b, p, y0, x1], x[b, p, y1, x1])
                sx, sy = sampling.add_position_grads(
                    sx, sy, u, dy, dx, cx == sampling.FREE, cy == sampling.FREE, one
                )
    if want_offsets:
        cuda.atomic.add(grad_offsets, (n, 2 * m, qh, qw), sx * dv * trans_std * roi_w)
        cuda.atomic.add(grad_offsets, (n, 2 * m + 1, qh, qw), sy * dv * trans_std * roi_h)


def forward(
    x, rois, offsets, has_offsets, spatial_scale, trans_std, pooled_h, pooled_w, samples, out,
    stream=0,
):  # fmt: skip
    """x: T[N, C, H, W], rois: T[K, 5], offsets: T[K, 2M, PH, PW] (read iff ``has_offsets``)
    -> out: T[K, C_out, PH, PW] (written)."""
    t = x.dtype.type
    launch(
        _forward_kernel, out.size, stream, x, rois, offsets, has_offsets, t(spatial_scale),
        t(trans_std), pooled_h, pooled_w, samples, out,
    )  # fmt: skip


def backward(
    grad, x, rois, offsets, has_offsets, want_offsets, spatial_scale, trans_std, pooled_h,
    pooled_w, samples, grad_x, grad_offsets, stream=0,
):  # fmt: skip
    """grad: T[K, C_out, PH, PW] -> grad_x: T[N, C, H, W] and, if ``want_offsets``,
    grad_offsets: T[K, 2M, PH, PW] (both zero on entry, accumulated)."""
    t = x.dtype.type
    launch(
        _backward_kernel, grad.size, stream, grad, x, rois, offsets, has_offsets, want_offsets,
        t(spatial_scale), t(trans_std), pooled_h, pooled_w, samples, grad_x, grad_offsets,
    )  # fmt: skip
