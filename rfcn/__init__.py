"""rfcn: R-FCN object detection (Dai et al., NIPS 2016) in PyTorch with Numba kernels."""

__version__ = "0.1.0"
