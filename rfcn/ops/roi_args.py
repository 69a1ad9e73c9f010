"""Argument checks and box conversion shared by the PS RoI ops.

Checks that depend only on shapes, dtypes and Python values run in the Python wrappers (free
under ``torch.compile``); checks on box values run once inside the op (one host sync).
All of them raise ``TypeError``/``ValueError`` naming the argument, never ``AssertionError``.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

_FLOATS = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def boxes_to_rois(boxes: Tensor | list[Tensor] | tuple[Tensor, ...]) -> Tensor:
    """Boxes as ``Tensor[K, 5]`` (batch index, x1, y1, x2, y2).

    Args:
        boxes (Tensor[K, 5] or List[Tensor[L, 4]]): RoIs, or per-image boxes in xyxy.
    """
    if isinstance(boxes, Tensor):
        if boxes.dim() != 2 or boxes.shape[1] != 5:
            raise ValueError(f"boxes: a Tensor must have shape [K, 5], got {list(boxes.shape)}")
        if not boxes.is_floating_point():
            raise TypeError(f"boxes must be a floating-point Tensor, got {boxes.dtype}")
        return boxes
    if not isinstance(boxes, (list, tuple)):
        raise TypeError(
            f"boxes must be a Tensor[K, 5] or a list of Tensor[L, 4], got {type(boxes)}"
        )
    if len(boxes) == 0:
        raise ValueError("boxes: the list of per-image boxes is empty")
    for i, b in enumerate(boxes):
        if not isinstance(b, Tensor):
            raise TypeError(f"boxes[{i}] must be a Tensor, got {type(b)}")
        if b.dim() != 2 or b.shape[1] != 4:
            raise ValueError(f"boxes[{i}] must have shape [L, 4], got {list(b.shape)}")
        if not b.is_floating_point():
            raise TypeError(f"boxes[{i}] must be floating point, got {b.dtype}")
        if b.device != boxes[0].device or b.dtype != boxes[0].dtype:
            raise ValueError("boxes: every Tensor of the list must share one device and dtype")
    idx = torch.cat([torch.full_like(b[:, :1], i) for i, b in enumerate(boxes)], dim=0)
    return torch.cat([idx, torch.cat(list(boxes), dim=0)], dim=1)


def output_hw(output_size: int | tuple[int, int] | list[int]) -> tuple[int, int]:
    """``(h, w)`` from ``int`` or a pair of positive ints."""
    if isinstance(output_size, (list, tuple)):
        if len(output_size) != 2:
            raise ValueError(f"output_size must be an int or (h, w), got {output_size!r}")
        size = tuple(output_size)
    else:
        size = (output_size, output_size)
    for s in size:
        if isinstance(s, bool) or not isinstance(s, int):
            raise TypeError(f"output_size must hold ints, got {output_size!r}")
        if s <= 0:
            raise ValueError(f"output_size must be positive, got {output_size!r}")
    return size[0], size[1]


def check_scale(spatial_scale: float) -> float:
    if isinstance(spatial_scale, bool) or not isinstance(spatial_scale, (int, float)):
        raise TypeError(f"spatial_scale must be a float, got {type(spatial_scale)}")
    if not (math.isfinite(spatial_scale) and spatial_scale > 0):
        raise ValueError(f"spatial_scale must be finite and positive, got {spatial_scale}")
    return float(spatial_scale)


# Samples per bin side of PS RoI align: beyond this a box is absurdly large for its map
# (a 7x7 output at this grid covers > 7000 feature pixels per side) and the sample loops
# would effectively hang, so it is rejected rather than run.
MAX_SAMPLES_PER_SIDE = 1024


def check_sampling_ratio(sampling_ratio: int) -> int:
    if isinstance(sampling_ratio, bool) or not isinstance(sampling_ratio, int):
        raise TypeError(f"sampling_ratio must be an int, got {type(sampling_ratio)}")
    if sampling_ratio > MAX_SAMPLES_PER_SIDE:
        raise ValueError(
            f"sampling_ratio must be at most {MAX_SAMPLES_PER_SIDE}, got {sampling_ratio}"
        )
    if sampling_ratio < -1:
        raise ValueError(
            f"sampling_ratio must be -1 or 0 (adaptive) or positive, got {sampling_ratio}"
        )
    return sampling_ratio


def check_input(input: Tensor, rois: Tensor, pooled_h: int, pooled_w: int) -> None:
    """Shape, dtype and device checks of ``input`` against ``rois``."""
    if not isinstance(input, Tensor):
        raise TypeError(f"input must be a Tensor, got {type(input)}")
    if input.dim() != 4:
        raise ValueError(f"input must have shape [N, C, H, W], got {list(input.shape)}")
    if input.dtype not in _FLOATS:
        raise TypeError(f"input must be float16/bfloat16/float32/float64, got {input.dtype}")
    n, c, h, w = input.shape
    if c % (pooled_h * pooled_w) != 0:
        raise ValueError(
            f"input: channels C={c} must be divisible by output_h*output_w={pooled_h * pooled_w}"
        )
    if h == 0 or w == 0:
        raise ValueError(f"input must have a non-empty spatial size, got H={h}, W={w}")
    if rois.device != input.device:
        raise ValueError(f"boxes are on {rois.device} but input is on {input.device}")
    if rois.dtype != input.dtype and not torch.is_autocast_enabled(input.device.type):
        raise TypeError(f"boxes dtype {rois.dtype} must equal input dtype {input.dtype}")


def _adaptive_grid(rois: Tensor, spatial_scale: float, bins: tuple[int, int]) -> Tensor:
    """Largest adaptive sampling grid side, ``ceil(size * scale / bins)``, per RoI."""
    r = rois.detach().double() * spatial_scale
    gh = torch.ceil((r[:, 4] - r[:, 2]) / bins[0])
    gw = torch.ceil((r[:, 3] - r[:, 1]) / bins[1])
    return torch.maximum(gh, gw)


def check_roi_values(
    rois: Tensor,
    batch_size: int,
    align: tuple[float, int, int, int] | None = None,
) -> None:
    """Finite coordinates, batch index in ``[0, N)`` and, for align with adaptive sampling
    (``align = (spatial_scale, PH, PW, sampling_ratio)``), a sampling grid of at most
    ``MAX_SAMPLES_PER_SIDE`` per bin side. One host sync."""
    if rois.shape[0] == 0:
        return
    idx = rois[:, 0]
    ok = torch.isfinite(rois).all() & (idx >= 0).all() & (idx < batch_size).all()
    adaptive = align is not None and align[3] <= 0
    if adaptive:
        grid = _adaptive_grid(rois, align[0], (align[1], align[2]))
        ok = ok & (grid <= MAX_SAMPLES_PER_SIDE).all()
    if bool(ok):
        return
    if not bool(torch.isfinite(rois[:, 1:]).all()):
        raise ValueError("boxes must have finite coordinates")
    if adaptive and not bool((grid <= MAX_SAMPLES_PER_SIDE).all()):
        raise ValueError(
            f"boxes: a box needs {int(grid.max())} adaptive samples per bin side (at most "
            f"{MAX_SAMPLES_PER_SIDE}); pass sampling_ratio > 0 for boxes this large"
        )
    bad = idx[~((idx >= 0) & (idx < batch_size))]
    raise ValueError(
        f"boxes: batch index {bad[0].item()} out of range for input with N={batch_size} images"
    )
