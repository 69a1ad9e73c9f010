"""The deformable PS RoI pooling Numba-CUDA kernels compile for a real GPU target (PTX, no GPU
needed): catches typing errors that the simulator, which runs the bodies as Python, cannot
see."""

from __future__ import annotations

import pytest
from numba import types


@pytest.mark.parametrize("dtype", [types.float32,
                                   pytest.param(types.float64, marks=pytest.mark.slow)])
def test_deform_cuda_kernels_compile_to_ptx(dtype, compile_ptx):
    from rfcn.kernels import deform_psroi_cuda

    a4, a2 = types.Array(dtype, 4, "C"), types.Array(dtype, 2, "C")
    i64, b1 = types.int64, types.boolean
    params = (dtype, dtype, i64, i64, i64)  # scale, trans_std, PH, PW, samples
    kernels = [
        (deform_psroi_cuda._forward_kernel, (a4, a2, a4, b1, *params, a4)),
        (deform_psroi_cuda._backward_kernel, (a4, a4, a2, a4, b1, b1, *params, a4, a4)),
    ]
    for kernel, sig in kernels:
        ptx = compile_ptx(kernel, sig)
        if kernel is deform_psroi_cuda._backward_kernel:
            assert "atom.global.add" in ptx or "red.global.add" in ptx
