"""The Numba-CUDA kernels compile for a real GPU target (PTX, no GPU needed): catches typing
errors that the simulator, which runs the bodies as Python, cannot see."""

from __future__ import annotations

import pytest
from numba import types


@pytest.mark.parametrize("dtype", [types.float32, types.float64])
def test_cuda_kernels_compile_to_ptx(dtype, compile_ptx):
    from rfcn.kernels import psroi_cuda

    a4, a2 = types.Array(dtype, 4, "C"), types.Array(dtype, 2, "C")
    common = (a4, a2, dtype, types.int64, types.int64)
    kernels = [
        (psroi_cuda._pool_forward_kernel, (*common, a4)),
        (psroi_cuda._pool_backward_kernel, (*common, a4)),
        (psroi_cuda._align_forward_kernel, (*common, types.int64, a4)),
        (psroi_cuda._align_backward_kernel, (*common, types.int64, a4)),
    ]
    for kernel, sig in kernels:
        ptx = compile_ptx(kernel, sig)
        if "pool" in kernel.py_func.__name__:
            # no contraction in the pooling arithmetic: bit-identical to the CPU forward
            assert "fma.rn" not in ptx
