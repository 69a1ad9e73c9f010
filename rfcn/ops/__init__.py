"""Torch custom ops of rfcn: position-sensitive RoI pooling and RoI align.

Importing this package registers ``torch.ops.rfcn.ps_roi_pool`` and ``torch.ops.rfcn.ps_roi_align``
(plus their backward ops) with CPU (Numba) and CUDA (Numba-CUDA) kernels.
"""

from rfcn.ops.ps_roi_align import PSRoIAlign, ps_roi_align
from rfcn.ops.ps_roi_pool import PSRoIPool, ps_roi_pool

__all__ = ["PSRoIAlign", "PSRoIPool", "ps_roi_align", "ps_roi_pool"]
