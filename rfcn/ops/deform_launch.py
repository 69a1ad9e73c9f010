"""Runs the deformable PS RoI pooling kernels on torch tensors: CPU via ``.numpy()`` views,
CUDA zero-copy on torch's current stream (the seams of rfcn.ops.kernel_launch, so the
simulator tests patch one place). Tensors arrive contiguous in the compute dtype.

Shape shorthand: N images, C channels, H x W map, K RoIs, PH x PW bins, C_out = C/(PH*PW),
M offset classes, S samples per bin side.
"""

from __future__ import annotations

import contextlib
from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor

from rfcn.kernels import deform_psroi_cpu
from rfcn.ops import kernel_launch

# Samples per output bin of ps_roi_align at sampling_ratio 2, the unit of
# kernel_launch's parallel threshold.
_ALIGN_SAMPLES = 4


class DeformArgs(NamedTuple):
    """The op's numbers, in the order the kernels take them."""

    spatial_scale: float
    trans_std: float
    pooled_h: int
    pooled_w: int
    samples: int  # per bin side (sample_per_part)


def _cuda():
    from rfcn.kernels import deform_psroi_cuda  # CUDA-only import

    return deform_psroi_cuda


def _cpu_args(x: Tensor, args: DeformArgs) -> tuple[np.floating, np.floating, int, int, int]:
    """``args`` with the floats as numpy scalars of x's dtype (one numba version per dtype)."""
    t = np.float32 if x.dtype == torch.float32 else np.float64
    return t(args.spatial_scale), t(args.trans_std), args.pooled_h, args.pooled_w, args.samples


def _cpu_threads(n_bins: int, args: DeformArgs) -> contextlib.AbstractContextManager[int]:
    """kernel_launch._cpu_threads for ``n_bins`` output bins of S x S samples each."""
    return kernel_launch._cpu_threads(n_bins * args.samples**2 // _ALIGN_SAMPLES)


def _views(*tensors: Tensor) -> list[np.ndarray]:
    return [t.detach().numpy() for t in tensors]


def _no_offsets(x: Tensor) -> Tensor:
    """Stand-in offsets (never read) for ``offsets=None``: M = 1."""
    return x.new_zeros((1, 2, 1, 1))


def forward(x: Tensor, rois: Tensor, offsets: Tensor | None, args: DeformArgs) -> Tensor:
    """x: T[N, C, H, W], rois: T[K, 5], offsets: T[K, 2M, PH, PW] or None
    -> T[K, C_out, PH, PW]."""
    ph, pw = args.pooled_h, args.pooled_w
    out = x.new_empty((rois.shape[0], x.shape[1] // (ph * pw), ph, pw))
    if out.numel() == 0:
        return out
    has = offsets is not None
    off = offsets if has else _no_offsets(x)
    if kernel_launch._is_cuda(x):
        with kernel_launch._cuda_launch(x, rois, off, out) as (stream, (xa, ra, oa, outa)):
            _cuda().forward(xa, ra, oa, has, *args, outa, stream)
        return out
    with _cpu_threads(out.numel(), args) as workers:
        xn, rn, on = _views(x, rois, off)
        deform_psroi_cpu.deform_forward(xn, rn, on, has, *_cpu_args(x, args), out.numpy(), workers)
    return out


def backward(
    grad: Tensor,
    x: Tensor,
    rois: Tensor,
    offsets: Tensor | None,
    args: DeformArgs,
    want_offsets: bool,
) -> tuple[Tensor, Tensor]:
    """grad: T[K, C_out, PH, PW] -> (T[N, C, H, W], T[K, 2M, PH, PW]); the second is empty
    (shape [0]) unless ``want_offsets`` (which needs ``offsets``)."""
    has = offsets is not None
    want = want_offsets and has
    off = offsets if has else _no_offsets(x)
    empty = grad.new_empty((0,))
    if kernel_launch._is_cuda(grad):
        gx = torch.zeros_like(x)  # the CUDA kernel accumulates atomically
        go = torch.zeros_like(off) if want else _no_offsets(x)
        if grad.numel() and gx.numel():
            with kernel_launch._cuda_launch(grad, x, rois, off, gx, go) as (stream, arrays):
                ga, xa, ra, oa, gxa, goa = arrays
                _cuda().backward(ga, xa, ra, oa, has, want, *args, gxa, goa, stream)
        return gx, go if want else empty
    if grad.numel() == 0 or x.numel() == 0:
        return torch.zeros_like(x), torch.zeros_like(off) if want else empty
    gx = torch.empty_like(x)  # the CPU kernel writes every element
    go = torch.empty_like(off) if want else grad.new_empty((0, 0, 0, 0))
    with _cpu_threads(grad.numel(), args) as workers:
        gn, xn, rn, on = _views(grad, x, rois, off)
        cpu_args = _cpu_args(x, args)
        deform_psroi_cpu.deform_backward(
            gn, xn, rn, on, has, want, *cpu_args, gx.numpy(), go.numpy(), workers
        )
    return gx, go if want else empty
