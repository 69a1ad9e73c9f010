"""Scalar arithmetic of deformable PS RoI pooling, one copy for the CPU kernels
(deform_psroi_cpu.py) and the CUDA kernels (deform_psroi_cuda.py); no torch here.

Every function is ``njit(inline="always")`` and takes scalars only: numba-cuda compiles an
njit function called from a CUDA kernel as a device function of that kernel, and the CUDA
simulator calls the CPU build, which cannot take device arrays (hence no arrays here). The
arithmetic is the original operator's (Deformable-ConvNets, ``deformable_psroi_pooling.cu``),
in the dtype T of the arguments; ``t`` is T's type (``x.dtype.type``).

Numba's cache keys a compiled function on its own source file only: after editing this module,
delete kernels/__pycache__ so the kernels that inline it are compiled again.

Along one axis of a bin, sample ``s`` (``0 <= s < S``) sits at ``start + s * sub``; its
bilinear corners are ``u_ij``, the value at column ``x_i`` and row ``y_j``.
"""

from __future__ import annotations

import math

from numba import njit

# Sample codes along one axis: outside the map (skipped), inside but clamped to the border
# (no derivative w.r.t. the position), inside (bilinear derivative).
OUT = 0
CLAMPED = 1
FREE = 2

# From 2**52 on, every float64 is an integer (and math.trunc could overflow int64).
_INTEGRAL = 2.0**52


@njit(inline="always")
def round_half_away(v):
    """C ``round`` (half away from zero) of a finite value, as a float64 (exact)."""
    r = float(v)
    if abs(r) >= _INTEGRAL:
        return r
    whole = float(math.trunc(r))
    if r - whole >= 0.5:
        return whole + 1.0
    if r - whole <= -0.5:
        return whole - 1.0
    return whole


@njit(inline="always")
def box_geometry(x1, y1, x2, y2, spatial_scale, pooled_h, pooled_w, samples, t):
    """``(start_w, start_h, roi_w, roi_h, bin_w, bin_h, sub_w, sub_h)`` of the box ``(x1, y1,
    x2, y2)``: ``start = round(x1) * scale - 0.5``, ``end = (round(x2) + 1) * scale - 0.5``,
    ``roi = max(end - start, 0.1)``, ``bin = roi / pooled``, ``sub = bin / samples``."""
    half = t(0.5)
    start_w = t(round_half_away(x1)) * spatial_scale - half
    start_h = t(round_half_away(y1)) * spatial_scale - half
    end_w = t(round_half_away(x2) + 1.0) * spatial_scale - half
    end_h = t(round_half_away(y2) + 1.0) * spatial_scale - half
    roi_w = max(end_w - start_w, t(0.1))
    roi_h = max(end_h - start_h, t(0.1))
    bin_w = roi_w / t(pooled_w)
    bin_h = roi_h / t(pooled_h)
    return start_w, start_h, roi_w, roi_h, bin_w, bin_h, bin_w / t(samples), bin_h / t(samples)


@njit(inline="always")
def part(i, n_bins, t):
    """The original's part of bin ``i``, ``floor(i / n_bins * part_size)`` with part size =
    ``n_bins``, in T (see deform_psroi_cpu.part_index)."""
    return int(math.floor(t(i) / t(n_bins) * t(n_bins)))


@njit(inline="always")
def bin_start(i, bin_size, start, shift, t):
    """Position of sample 0 of bin ``i``: ``i * bin + start``, then the offset ``shift``, in
    the original's order (positions can sit exactly on the edges, so the rounding must
    agree)."""
    v = t(i) * bin_size + start
    return v + shift


@njit(inline="always")
def axis_sample(start, s, sub, limit, t):
    """``(code, low, high, frac)`` of sample ``s`` on an axis of ``limit`` pixels: the original
    skips a position outside ``[-0.5, limit - 0.5]`` (OUT; NaN too) and clamps the others to
    ``[0, limit - 1]`` (CLAMPED where that moved it, else FREE); ``low``/``high`` are the
    bilinear neighbours, ``frac`` the weight of ``high``."""
    v = start + t(s) * sub
    top = t(limit - 1)
    if not (v >= -0.5 and v <= t(limit) - t(0.5)):
        return OUT, 0, 0, t(0)
    code = FREE if (v >= 0 and v <= top) else CLAMPED
    v = min(max(v, t(0)), top)
    low = int(v)
    return code, low, low + 1 if low < limit - 1 else low, v - t(low)


@njit(inline="always")
def corner_weights(dy, dx, one):
    """Bilinear weights of ``(u00, u01, u10, u11)`` at fractions ``dy``, ``dx``."""
    return (one - dx) * (one - dy), (one - dx) * dy, dx * (one - dy), dx * dy


@njit(inline="always")
def bilinear(corners, dy, dx, one):
    """The original's interpolation of ``corners = (u00, u01, u10, u11)``, in its order of
    operations."""
    u00, u01, u10, u11 = corners
    w00, w01, w10, w11 = corner_weights(dy, dx, one)
    return w00 * u00 + w01 * u01 + w10 * u10 + w11 * u11


@njit(inline="always")
def add_position_grads(sx, sy, corners, dy, dx, x_free, y_free, one):
    """``(sx, sy)`` plus the derivatives of :func:`bilinear` w.r.t. the sample's x and y
    position; none along an axis where the sample was clamped (not ``x_free``/``y_free``)."""
    u00, u01, u10, u11 = corners
    if x_free:
        sx += (one - dy) * (u10 - u00) + dy * (u11 - u01)
    if y_free:
        sy += (one - dx) * (u01 - u00) + dx * (u11 - u10)
    return sx, sy
