"""The launch grid of the Numba-CUDA kernels (psroi_cuda.py, deform_psroi_cuda.py; no torch
here): one thread per output element ``(n, c_out, ph, pw)`` of ``T[K, C_out, PH, PW]``, whose
input plane is ``p = (c_out * PH + ph) * PW + pw``.

The launchers take device arrays (``cuda.as_cuda_array`` of torch tensors, or
``cuda.to_device`` in the simulator) and a stream, so the same bodies run under
``NUMBA_ENABLE_CUDASIM=1``. (The kernels' cache does not see edits to this module: delete
kernels/__pycache__ after one.)
"""

from __future__ import annotations

from numba import cuda

THREADS = 256


@cuda.jit(device=True, inline=True)
def decode(idx, c_out, pooled_h, pooled_w):
    """``(n, c_out, ph, pw, p)`` of output element ``idx``."""
    pw = idx % pooled_w
    ph = (idx // pooled_w) % pooled_h
    co = (idx // (pooled_w * pooled_h)) % c_out
    n = idx // (pooled_w * pooled_h * c_out)
    return n, co, ph, pw, (co * pooled_h + ph) * pooled_w + pw


def launch(kernel, n_threads: int, stream, *args) -> None:
    """``kernel(*args)`` on ``n_threads`` threads (none when 0), ``THREADS`` a block."""
    if n_threads:
        kernel[(n_threads + THREADS - 1) // THREADS, THREADS, stream](*args)
