"""Torch ops of rfcn: position-sensitive RoI pooling, RoI align and deformable pooling (custom
ops), and soft-NMS; every Numba kernel of rfcn.kernels is reached through this package.

Importing this package registers ``torch.ops.rfcn.ps_roi_pool``, ``torch.ops.rfcn.ps_roi_align``
and ``torch.ops.rfcn.deform_ps_roi_pool`` (plus their backward ops) with CPU (Numba) and CUDA
(Numba-CUDA) kernels.
"""

from rfcn.ops.deform_ps_roi_pool import DeformPSRoIPool, deform_ps_roi_pool
from rfcn.ops.ps_roi_align import PSRoIAlign, ps_roi_align
from rfcn.ops.ps_roi_pool import PSRoIPool, ps_roi_pool
from rfcn.ops.soft_nms import SOFT_METHODS, soft_nms

__all__ = [
    "SOFT_METHODS",
    "DeformPSRoIPool",
    "PSRoIAlign",
    "PSRoIPool",
    "deform_ps_roi_pool",
    "ps_roi_align",
    "ps_roi_pool",
    "soft_nms",
]
