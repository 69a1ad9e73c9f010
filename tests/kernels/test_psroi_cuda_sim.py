"""The Numba-CUDA kernel bodies under the CUDA simulator, against torchvision (CPU).

Run in their own process: ``NUMBA_ENABLE_CUDASIM=1 python -m pytest -m cudasim``. The
simulator is slow (Python threads): a few tiny cases only.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torchvision.ops as tvo

pytestmark = pytest.mark.cudasim

SCALE = 0.5


def _case(dtype: torch.dtype, border: bool, seed: int):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(2, 2 * 4, 5, 6, generator=gen, dtype=torch.float64).to(dtype)
    rois = torch.tensor(
        [
            [0, 1.0, 1.0, 7.0, 6.0],
            [1, -3.0, 2.0, 5.0, 4.5],  # partly outside
            [1, 6.0, 5.0, 2.0, 1.0],  # reversed
            [0, 2.2, 3.7, 2.9, 4.1],  # tiny
        ],
        dtype=dtype,
    )
    if border:
        rois = torch.cat([rois, torch.tensor([[0, 3.0, 2.0, 12.0, 10.0]], dtype=dtype)])
    return x, rois


def _run(kind: str, x: torch.Tensor, rois: torch.Tensor, g: torch.Tensor, extra: tuple):
    from numba import cuda
    from rfcn.kernels import psroi_cuda

    fwd = psroi_cuda.pool_forward if kind == "pool" else psroi_cuda.align_forward
    bwd = psroi_cuda.pool_backward if kind == "pool" else psroi_cuda.align_backward
    xd, rd = cuda.to_device(x.numpy()), cuda.to_device(rois.numpy())
    out = cuda.to_device(np.zeros(tuple(g.shape), x.numpy().dtype))
    fwd(xd, rd, SCALE, 2, 2, *extra, out)
    gx = cuda.to_device(np.zeros(tuple(x.shape), x.numpy().dtype))
    bwd(cuda.to_device(g.numpy()), rd, SCALE, 2, 2, *extra, gx)
    return torch.from_numpy(out.copy_to_host()), torch.from_numpy(gx.copy_to_host())


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("kind,extra", [("pool", ()), ("align", (-1,)), ("align", (2,))])
def test_cuda_kernels_match_torchvision(kind, extra, dtype):
    x, rois = _case(dtype, border=False, seed=len(extra) + (dtype == torch.float64))
    tv = tvo.ps_roi_pool if kind == "pool" else tvo.ps_roi_align
    xr = x.clone().requires_grad_()
    expected = tv(xr, rois, 2, SCALE, *extra)
    g = torch.randn(expected.shape, dtype=dtype)
    expected.backward(g)
    out, gx = _run(kind, x, rois, g, extra)
    ok = torch.isfinite(expected)
    if kind == "pool":
        assert torch.equal(out, expected)
    else:
        torch.testing.assert_close(out[ok], expected[ok], rtol=1e-5, atol=1e-6)
        assert torch.equal(out[~ok], torch.zeros_like(out[~ok]))  # 0, not NaN
    torch.testing.assert_close(gx, xr.grad)


@pytest.mark.parametrize("kind,extra", [("pool", ()), ("align", (-1,))])
def test_cuda_kernels_match_cpu_op_at_the_border(kind, extra):
    from rfcn.ops import ps_roi_align, ps_roi_pool

    x, rois = _case(torch.float64, border=True, seed=3)
    op = ps_roi_pool if kind == "pool" else ps_roi_align
    xr = x.clone().requires_grad_()
    expected = op(xr, rois, 2, SCALE, *extra)
    g = torch.randn(expected.shape, dtype=torch.float64)
    expected.backward(g)
    out, gx = _run(kind, x, rois, g, extra)
    torch.testing.assert_close(out, expected, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(gx, xr.grad, rtol=1e-12, atol=1e-12)


def test_torch_launch_path_under_the_simulator(simulate_cuda_branch):
    """The op's CUDA branch (rfcn.ops.kernel_launch) end to end, with torch CPU tensors copied
    to simulated device arrays in place of zero-copy views (no as_cuda_array/external_stream
    in the simulator): checks the argument wiring of all four launches."""
    from rfcn.ops import ps_roi_align, ps_roi_pool

    x, rois = _case(torch.float64, border=True, seed=4)
    expected = []
    for op, extra in ((ps_roi_pool, ()), (ps_roi_align, (-1,))):
        xr = x.clone().requires_grad_()
        out = op(xr, rois, 2, SCALE, *extra)
        out.backward(torch.ones_like(out))
        expected.append((out.detach(), xr.grad))
    simulate_cuda_branch()
    for (op, extra), (out_cpu, grad_cpu) in zip(
        ((ps_roi_pool, ()), (ps_roi_align, (-1,))), expected, strict=True
    ):
        xr = x.clone().requires_grad_()
        out = op(xr, rois, 2, SCALE, *extra)
        out.backward(torch.ones_like(out))
        torch.testing.assert_close(out, out_cpu, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(xr.grad, grad_cpu, rtol=1e-12, atol=1e-12)
