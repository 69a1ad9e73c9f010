"""Worker batches in reused shared-memory slots (rfcn.data.shared_slots): the values, strides
and targets arrive unchanged, a slot is only reused once its batch was copied out, and a
long run through workers gives the batches of the in-process loader."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from data_builders import good_coco_dataset

from rfcn.data.coco import CocoDetection
from rfcn.data.loader import build_train_loader
from rfcn.data.records import to_uint8_tensor
from rfcn.data.shared_slots import (
    SlotMappings,
    SlotRing,
    pack_targets,
    unpack_images,
    unpack_targets,
)
from rfcn.data.transforms import build_train_transforms


def _images(rng: np.random.Generator) -> list[torch.Tensor]:
    hwc = [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for h, w in ((17, 23), (9, 31))]
    strided = torch.from_numpy(hwc[0].transpose(2, 0, 1)[:, ::2].copy())  # contiguous [3, H, W]
    return [to_uint8_tensor(a) for a in hwc] + [strided, strided[:, :, 1::2]]  # + a strided view


def test_pack_keeps_values_and_strides_in_one_reused_storage() -> None:
    ring = SlotRing(2)
    images = _images(np.random.default_rng(0))
    first = ring.pack(images)
    assert len({im.untyped_storage().data_ptr() for im in first}) == 1  # one segment
    assert first[0].is_shared()
    for a, b in zip(images[:3], first[:3], strict=True):  # dense layouts are kept
        assert torch.equal(a, b) and a.stride() == b.stride()
    assert torch.equal(images[3], first[3]) and first[3].is_contiguous()  # a strided view
    second = ring.pack(images[:1])
    third = ring.pack(images[1:])  # back to the first slot
    assert second[0].untyped_storage().data_ptr() != first[0].untyped_storage().data_ptr()
    assert third[0].untyped_storage().data_ptr() == first[0].untyped_storage().data_ptr()
    big = [torch.zeros(3, 64, 64, dtype=torch.uint8)]
    assert torch.equal(ring.pack(big)[0], big[0])  # a slot grows when a batch is larger
    copies = unpack_images(third)
    ring.pack([torch.full_like(images[1], 7)])
    ring.pack([torch.full_like(images[1], 7)])  # overwrites the slot `third` lives in
    assert torch.equal(copies[0], images[1]) and not torch.equal(third[0], images[1])


def test_targets_travel_as_arrays() -> None:
    t = {"boxes": torch.rand(3, 4), "labels": torch.tensor([1, 2, 3]), "image_id": 5,
         "iscrowd": torch.zeros(3, dtype=torch.bool), "orig_size": (4, 5)}
    packed = pack_targets([t])
    assert not any(isinstance(v, torch.Tensor) for v in packed[0].values())
    back = unpack_targets(packed)[0]
    assert back.keys() == t.keys() and back["image_id"] == 5 and back["orig_size"] == (4, 5)
    for k in ("boxes", "labels", "iscrowd"):
        assert back[k].dtype == t[k].dtype and torch.equal(back[k], t[k])


def test_ring_needs_two_slots() -> None:
    with pytest.raises(ValueError, match="slots"):
        SlotRing(1)


def test_workers_give_the_in_process_batches_while_earlier_ones_are_kept(tmp_path) -> None:
    sizes = [(40 + 3 * i, 60 - 2 * i) for i in range(12)]
    img_dir, ann = good_coco_dataset(tmp_path, sizes)
    ds = CocoDetection(img_dir, ann)
    tf = build_train_transforms([32, 48], 96, flip_prob=0.5)

    def run(workers: int) -> list:
        out = []
        for batch in build_train_loader(ds, 3, seed=4, num_workers=workers, transforms=tf):
            out.append(batch)  # kept: a reused slot must not change a batch already handed out
            if len(out) == 16:
                return out
        return out

    ref, got = run(0), run(2)
    for a, b in zip(ref, got, strict=True):
        assert len(a.images) == len(b.images)
        for x, y in zip(a.images, b.images, strict=True):
            assert torch.equal(x, y)
        for s, t in zip(a.targets, b.targets, strict=True):
            assert s.keys() == t.keys()
            for k in s:
                assert (torch.equal(s[k], t[k]) if isinstance(s[k], torch.Tensor)
                        else s[k] == t[k]), k


def test_the_main_process_keeps_the_last_slots_mapped() -> None:
    ring, mappings = SlotRing(3), SlotMappings(2)
    images = _images(np.random.default_rng(1))[:2]
    ptrs = []
    for _ in range(4):
        packed = ring.pack(images)
        copies = mappings.unpack(packed)
        assert all(torch.equal(a, b) for a, b in zip(copies, images, strict=True))
        assert copies[0].untyped_storage().data_ptr() != packed[0].untyped_storage().data_ptr()
        ptrs.append(packed[0].untyped_storage().data_ptr())
    kept = [s.data_ptr() for s in mappings._mapped]
    assert kept == ptrs[2:] and mappings.unpack([]) == []
