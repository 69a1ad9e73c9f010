"""Reusable shared-memory slots for the batches a loader worker hands back.

A tensor a DataLoader worker returns is copied into a fresh shared-memory segment, and every
page of a fresh segment is a page fault, once in the worker and again in the main process:
for an 800x1200 uint8 image that costs about as much as decoding the JPEG (measured in
README, "COCO-size data"). Each small target tensor (boxes, labels, flags) is one more
segment. So a worker packs the images of a batch into one of a few segments it keeps
(`SlotRing`, one ring per worker, reused in turn) and hands the targets over as numpy arrays
(pickled by value); the main process copies the images out of the slot at once and turns
the arrays back into tensors (`SlotMappings`, `unpack_targets`), keeping the slots mapped
(a slot mapped afresh page-faults again). Measured per 800x1200 image (tests' numbers in
README): 0.3 ms in the worker and 0.3 ms in the main process, against ~4.5 ms and ~1.2 ms
for a fresh segment per tensor.

Why `slots` = the DataLoader's prefetch factor + 2 is enough: a worker is given batch
``k + prefetch`` only after the main process has received its batch ``k`` (torch's
DataLoader keeps at most ``prefetch_factor`` tasks per worker), and the main process copies a
batch out before it asks for the next one, so when a worker writes a slot again, the batch
that used it last has been copied out (one slot to spare).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np
import torch

__all__ = ["SlotMappings", "SlotRing", "TensorArray", "pack_targets", "unpack_images",
           "unpack_targets"]

_ALIGN = 64  # bytes between images in a slot


class TensorArray(NamedTuple):
    """A target tensor on its way from a worker, as numpy (no shared-memory segment)."""

    array: np.ndarray


def _layout(image: torch.Tensor) -> torch.Tensor:
    """``image`` itself when its memory is contiguous in some order of its dimensions
    (uint8 [3, H, W] viewed from an H x W x 3 array), else a contiguous copy."""
    if image.is_contiguous() or image.permute(1, 2, 0).is_contiguous():
        return image
    return image.contiguous()


class SlotRing:
    """``slots`` shared-memory storages of one worker, used in turn by `pack`."""

    def __init__(self, slots: int) -> None:
        if slots < 2:
            raise ValueError(f"slots must be >= 2, got {slots}")
        self._storages: list[torch.UntypedStorage | None] = [None] * slots
        self._next = 0

    def pack(self, images: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """Copies of ``images`` (same shapes, strides and values) in the next slot."""
        images = [_layout(im) for im in images]
        offsets, total = [], 0
        for im in images:
            offsets.append(total)
            total += -(-im.numel() * im.element_size() // _ALIGN) * _ALIGN
        k = self._next
        self._next = (k + 1) % len(self._storages)
        storage = self._storages[k]
        if storage is None or storage.nbytes() < total:  # grow by a quarter: sizes vary
            storage = torch.UntypedStorage._new_shared(max(total, total * 5 // 4))
            self._storages[k] = storage
        out = []
        for im, offset in zip(images, offsets, strict=True):
            view = torch.empty(0, dtype=im.dtype).set_(
                storage, offset // im.element_size(), im.shape, im.stride())
            view.copy_(im)
            out.append(view)
        return out


def unpack_images(images: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """Private copies of slot-backed images (same strides), so the slot can be reused.

    numpy copies them: a torch copy runs on the intra-op thread pool, whose threads then
    spin-wait for more work on the cores the workers need (2 workers on 2 cores delivered
    228 images/s with torch's copy, 345-366 with this one).
    """
    return [torch.from_numpy(np.copy(im.numpy(), order="K")) for im in images]


class SlotMappings:
    """The main process's side: copies the images out (`unpack_images`) and keeps the last
    ``keep`` slots mapped, so that the next batch in a slot finds its mapping in torch's
    cache of shared storages instead of mapping (and page-faulting) it afresh."""

    def __init__(self, keep: int) -> None:
        self._mapped: deque[torch.UntypedStorage] = deque(maxlen=max(1, keep))

    def unpack(self, images: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        if images:
            storage = images[0].untyped_storage()
            if all(s.data_ptr() != storage.data_ptr() for s in self._mapped):
                self._mapped.append(storage)
        return unpack_images(images)


def pack_targets(targets: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Targets with their tensors as `TensorArray` (what a worker sends)."""
    return [{k: TensorArray(v.numpy()) if isinstance(v, torch.Tensor) else v
             for k, v in t.items()} for t in targets]


def unpack_targets(targets: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Inverse of `pack_targets`."""
    return [{k: torch.from_numpy(v.array) if isinstance(v, TensorArray) else v
             for k, v in t.items()} for t in targets]
