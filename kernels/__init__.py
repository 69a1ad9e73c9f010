"""Numba kernels for rfcn (installed as ``rfcn.kernels``). This package never imports torch."""
