"""The deformable PS RoI pooling CUDA kernel bodies under the CUDA simulator, against the CPU
kernels (through the op, float64: close, not bit-identical).

Run in their own process: ``NUMBA_ENABLE_CUDASIM=1 python -m pytest -m cudasim``. The
simulator is slow (Python threads): a few tiny cases only.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

pytestmark = pytest.mark.cudasim

SCALE = 0.5


def _case(dtype: torch.dtype, n_cls: int, seed: int):
    """x[2, 2*4, 5, 6], 5 RoIs (inside, partial, reversed, tiny, over the border) and offsets
    [5, 2*n_cls, 2, 2] large enough to push samples outside and into the clamped zone."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(2, 2 * 4, 5, 6, generator=gen, dtype=torch.float64).to(dtype)
    rois = torch.tensor(
        [
            [0, 1.0, 1.0, 7.0, 6.0],
            [1, -3.0, 2.0, 5.0, 4.5],
            [1, 6.0, 5.0, 2.0, 1.0],
            [0, 2.2, 3.7, 2.9, 4.1],
            [0, 3.0, 2.0, 12.0, 10.0],
        ],
        dtype=dtype,
    )
    offsets = (torch.randn(5, 2 * n_cls, 2, 2, generator=gen, dtype=torch.float64) * 3).to(dtype)
    return x, rois, offsets


def _run(x, rois, offsets, g, want_offsets=True):
    """(out, grad_x, grad_offsets) of the CUDA kernels; offsets None: no shift."""
    from numba import cuda
    from rfcn.kernels import deform_psroi_cuda

    dt = x.numpy().dtype
    has = offsets is not None
    off = offsets.numpy() if has else np.zeros((1, 2, 1, 1), dt)
    xd, rd, od = (cuda.to_device(a) for a in (x.numpy(), rois.numpy(), off))
    out = cuda.to_device(np.zeros(tuple(g.shape), dt))
    deform_psroi_cuda.forward(xd, rd, od, has, SCALE, 0.2, 2, 2, 2, out)
    gx = cuda.to_device(np.zeros(tuple(x.shape), dt))
    go = cuda.to_device(np.zeros(off.shape, dt))
    deform_psroi_cuda.backward(
        cuda.to_device(g.numpy()), xd, rd, od, has, want_offsets and has, SCALE, 0.2, 2, 2, 2,
        gx, go,
    )  # fmt: skip
    return tuple(torch.from_numpy(a.copy_to_host()) for a in (out, gx, go))


def _expected(x, rois, offsets, g):
    from rfcn.ops import deform_ps_roi_pool

    xr = x.clone().requires_grad_()
    orr = None if offsets is None else offsets.clone().requires_grad_()
    out = deform_ps_roi_pool(xr, rois, orr, 2, SCALE, 0.2, 2)
    out.backward(g)
    return out.detach(), xr.grad, None if orr is None else orr.grad


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("n_cls", [2, 1])
def test_cuda_kernels_match_cpu(n_cls, dtype):
    x, rois, offsets = _case(dtype, n_cls, seed=n_cls + 2 * (dtype == torch.float64))
    g = torch.randn(5, 2, 2, 2, dtype=torch.float64).to(dtype)
    out, gx, go = _run(x, rois, offsets, g)
    e_out, e_gx, e_go = _expected(x, rois, offsets, g)
    tol = dict(rtol=1e-12, atol=1e-12) if dtype == torch.float64 else {}
    torch.testing.assert_close(out, e_out, **tol)
    torch.testing.assert_close(gx, e_gx, **tol)
    torch.testing.assert_close(go, e_go, **tol)


def test_cuda_kernels_without_offsets():
    x, rois, _ = _case(torch.float64, 1, seed=7)
    g = torch.randn(5, 2, 2, 2, dtype=torch.float64)
    out, gx, go = _run(x, rois, None, g)
    e_out, e_gx, _ = _expected(x, rois, None, g)
    torch.testing.assert_close(out, e_out, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(gx, e_gx, rtol=1e-12, atol=1e-12)
    assert torch.equal(go, torch.zeros_like(go))  # never written


def test_torch_launch_path_under_the_simulator(simulate_cuda_branch):
    """The op's CUDA branch (rfcn.ops.deform_launch) end to end, with torch CPU tensors copied
    to simulated device arrays in place of zero-copy views (no as_cuda_array/external_stream
    in the simulator): checks the argument wiring of both launches."""
    from rfcn.ops import deform_ps_roi_pool

    x, rois, offsets = _case(torch.float64, 2, seed=4)
    g = torch.randn(5, 2, 2, 2, dtype=torch.float64)
    cases = [(offsets, True), (offsets, False), (None, False)]
    expected = []
    for off, grad_off in cases:
        xr = x.clone().requires_grad_()
        orr = None if off is None else off.clone().requires_grad_(grad_off)
        out = deform_ps_roi_pool(xr, rois, orr, 2, SCALE, 0.2, 2)
        out.backward(g)
        expected.append((out.detach(), xr.grad, None if orr is None else orr.grad))
    simulate_cuda_branch()
    for (off, grad_off), want in zip(cases, expected, strict=True):
        xr = x.clone().requires_grad_()
        orr = None if off is None else off.clone().requires_grad_(grad_off)
        out = deform_ps_roi_pool(xr, rois, orr, 2, SCALE, 0.2, 2)
        out.backward(g)
        got = (out.detach(), xr.grad, None if orr is None else orr.grad)
        for a, b in zip(got, want, strict=True):
            if b is None:
                assert a is None
            else:
                torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
