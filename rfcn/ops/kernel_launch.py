"""Runs the Numba kernels on torch tensors: CPU via ``.numpy()`` views, CUDA zero-copy on
torch's current stream. Tensors arrive contiguous in the compute dtype (float32/float64).

Shape shorthand: N images, C channels, H x W map, K RoIs, PH x PW bins, C_out = C/(PH*PW).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import numba
import numpy as np
import torch
from torch import Tensor

from rfcn.kernels import psroi_cpu

# Below this many output bins (~15 ms of single-thread work) a CPU call runs on one thread:
# each parallel region must wake the pool, and on a busy machine that can cost a scheduler
# slice (~4 ms) per region, more than the work itself.
_PARALLEL_MIN_BINS = 4_000_000


@contextlib.contextmanager
def _cpu_threads(n_bins: int) -> Iterator[int]:
    """Numba threads for one call (yielded): torch's thread budget (no oversubscription),
    1 below ``_PARALLEL_MIN_BINS``."""
    want = (
        1
        if n_bins < _PARALLEL_MIN_BINS
        else min(torch.get_num_threads(), numba.config.NUMBA_NUM_THREADS)
    )
    old = numba.get_num_threads()
    numba.set_num_threads(max(want, 1))
    try:
        yield max(want, 1)
    finally:
        numba.set_num_threads(old)


def _np_scale(x: Tensor, spatial_scale: float) -> np.floating:
    return np.float32(spatial_scale) if x.dtype == torch.float32 else np.float64(spatial_scale)


def _cuda():
    from rfcn.kernels import psroi_cuda  # CUDA-only import

    return psroi_cuda


def _is_cuda(t: Tensor) -> bool:
    # one seam for the simulator tests, which run the CUDA branch on CPU tensors
    return t.is_cuda


@contextlib.contextmanager
def _cuda_launch(*tensors: Tensor) -> Iterator[tuple]:
    """Zero-copy Numba views of ``tensors`` and torch's current stream on their device."""
    from numba import cuda

    device = tensors[0].device
    with torch.cuda.device(device), cuda.gpus[device.index]:
        stream = cuda.external_stream(torch.cuda.current_stream(device).cuda_stream)
        # sync=False: the kernels run on torch's stream, ordered after the producers
        arrays = [cuda.as_cuda_array(t.detach(), sync=False) for t in tensors]
        yield stream, arrays


def pool_forward(x: Tensor, rois: Tensor, spatial_scale: float, ph: int, pw: int) -> Tensor:
    """x: T[N, C, H, W], rois: T[K, 5] -> T[K, C_out, PH, PW]."""
    k, c = rois.shape[0], x.shape[1]
    out = x.new_empty((k, c // (ph * pw), ph, pw))
    if out.numel() == 0:
        return out
    if _is_cuda(x):
        with _cuda_launch(x, rois, out) as (stream, (xa, ra, oa)):
            _cuda().pool_forward(xa, ra, spatial_scale, ph, pw, oa, stream)
        return out
    with _cpu_threads(out.numel()) as workers:
        psroi_cpu.ps_roi_pool_forward(
            x.detach().numpy(),
            rois.detach().numpy(),
            _np_scale(x, spatial_scale),
            ph,
            pw,
            out.numpy(),
            workers,
        )
    return out


def pool_backward(
    grad: Tensor, rois: Tensor, spatial_scale: float, ph: int, pw: int, shape: tuple[int, ...]
) -> Tensor:
    """grad: T[K, C_out, PH, PW] -> T[N, C, H, W] (``shape``)."""
    if _is_cuda(grad):
        gx = grad.new_zeros(shape)  # the CUDA kernel accumulates atomically
        if grad.numel() and gx.numel():
            with _cuda_launch(grad, rois, gx) as (stream, (ga, ra, xa)):
                _cuda().pool_backward(ga, ra, spatial_scale, ph, pw, xa, stream)
        return gx
    if grad.numel() == 0 or int(np.prod(shape)) == 0:
        return grad.new_zeros(shape)
    gx = grad.new_empty(shape)  # the CPU kernel writes every element
    with _cpu_threads(grad.numel()) as workers:
        psroi_cpu.ps_roi_pool_backward(
            grad.detach().numpy(),
            rois.detach().numpy(),
            _np_scale(grad, spatial_scale),
            ph,
            pw,
            gx.numpy(),
            workers,
        )
    return gx


def align_forward(
    x: Tensor, rois: Tensor, spatial_scale: float, ph: int, pw: int, sampling_ratio: int
) -> Tensor:
    """x: T[N, C, H, W], rois: T[K, 5] -> T[K, C_out, PH, PW]."""
    k, c = rois.shape[0], x.shape[1]
    out = x.new_empty((k, c // (ph * pw), ph, pw))
    if out.numel() == 0:
        return out
    if _is_cuda(x):
        with _cuda_launch(x, rois, out) as (stream, (xa, ra, oa)):
            _cuda().align_forward(xa, ra, spatial_scale, ph, pw, sampling_ratio, oa, stream)
        return out
    with _cpu_threads(out.numel()) as workers:
        psroi_cpu.ps_roi_align_forward(
            x.detach().numpy(),
            rois.detach().numpy(),
            _np_scale(x, spatial_scale),
            ph,
            pw,
            sampling_ratio,
            out.numpy(),
            workers,
        )
    return out


def align_backward(
    grad: Tensor,
    rois: Tensor,
    spatial_scale: float,
    ph: int,
    pw: int,
    sampling_ratio: int,
    shape: tuple[int, ...],
) -> Tensor:
    """grad: T[K, C_out, PH, PW] -> T[N, C, H, W] (``shape``)."""
    if _is_cuda(grad):
        gx = grad.new_zeros(shape)  # the CUDA kernel accumulates atomically
        if grad.numel() and gx.numel():
            with _cuda_launch(grad, rois, gx) as (stream, (ga, ra, xa)):
                _cuda().align_backward(ga, ra, spatial_scale, ph, pw, sampling_ratio, xa, stream)
        return gx
    if grad.numel() == 0 or int(np.prod(shape)) == 0:
        return grad.new_zeros(shape)
    gx = grad.new_empty(shape)  # the CPU kernel writes every element
    with _cpu_threads(grad.numel()) as workers:
        psroi_cpu.ps_roi_align_backward(
            grad.detach().numpy(),
            rois.detach().numpy(),
            _np_scale(grad, spatial_scale),
            ph,
            pw,
            sampling_ratio,
            gx.numpy(),
            workers,
        )
    return gx
