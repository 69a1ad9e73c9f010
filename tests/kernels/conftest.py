"""Fixtures of the CUDA kernel tests: PTX compilation (no GPU needed) and the simulator seam
of rfcn.ops. numba.cuda is imported inside them: a plain run need not load it."""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import pytest


@pytest.fixture
def compile_ptx() -> Callable:
    """``compile_ptx(kernel, signature) -> str``: the PTX of a ``cuda.jit`` kernel for compute
    capability 8.0 (checked to hold an entry point); skips the test without numba-cuda's
    ``compile_ptx`` or without NVVM."""
    from numba import cuda

    if not hasattr(cuda, "compile_ptx"):
        pytest.skip("numba-cuda without compile_ptx")

    def compile_(kernel, signature) -> str:
        try:
            ptx, _ = cuda.compile_ptx(kernel.py_func, signature, cc=(8, 0))
        except Exception as e:  # no NVVM on this machine
            if "NVVM" in str(e) or "libnvvm" in str(e).lower():
                pytest.skip(f"NVVM unavailable: {e}")
            raise
        assert ".entry" in ptx
        return ptx

    return compile_


@contextlib.contextmanager
def _sim_launch(*tensors):
    """kernel_launch._cuda_launch for the simulator: torch CPU tensors copied to simulated
    device arrays (it has no as_cuda_array/external_stream) and back."""
    from numba import cuda

    arrays = [cuda.to_device(t.detach().numpy()) for t in tensors]
    yield 0, arrays
    for t, a in zip(tensors, arrays, strict=True):
        t.detach().numpy()[...] = a.copy_to_host()


@pytest.fixture
def simulate_cuda_branch(monkeypatch) -> Callable[[], None]:
    """Calling it sends the ops' CUDA branch (rfcn.ops.kernel_launch, deform_launch) through
    the simulator on CPU tensors, until the test ends."""
    from rfcn.ops import kernel_launch

    def enable() -> None:
        monkeypatch.setattr(kernel_launch, "_is_cuda", lambda t: True)
        monkeypatch.setattr(kernel_launch, "_cuda_launch", _sim_launch)

    return enable
