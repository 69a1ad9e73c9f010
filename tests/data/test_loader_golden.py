"""The loaders yield the samples they yielded before images became uint8 (issue 21).

``golden_loader_samples.json`` was recorded with the float32 loader (images as
``Tensor[3, H, W]`` float32 in [0, 1]): per sample the image id, shape, SHA-1 of the pixels as
uint8 and as float32, boxes and labels. Today's loader must give the same uint8 pixels, and the
model transform's conversion of them (``RFCNTransform.normalize`` with mean 0, std 1) the same
float32 bytes, bit for bit.
"""

from __future__ import annotations

import hashlib
import json
from itertools import islice
from pathlib import Path

import pytest
import torch
from data_builders import good_coco_dataset

from rfcn.data import CocoDetection, build_test_loader, build_train_loader
from rfcn.data.transforms import build_train_transforms
from rfcn.models.transform import RFCNTransform

GOLDEN = Path(__file__).with_name("golden_loader_samples.json")
SIZES = [(16, 24)] * 6 + [(24, 16)] * 4 + [(30, 30)] * 2
TF = build_train_transforms([16, 20, 32], 64, flip_prob=0.5, color_jitter=0.3, hue=0.1,
                            crop_prob=0.5, vflip_prob=0.5)
# identity normalisation: what is left is the uint8 -> float conversion
TO_FLOAT = RFCNTransform(32, 64, [0.0, 0.0, 0.0], [1.0, 1.0, 1.0])


@pytest.fixture(scope="module")
def golden() -> dict:
    return json.loads(GOLDEN.read_text())


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> CocoDetection:
    img_dir, ann = good_coco_dataset(tmp_path_factory.mktemp("golden"), SIZES)
    return CocoDetection(img_dir, ann)


def _sha1(t: torch.Tensor) -> str:
    return hashlib.sha1(t.numpy().tobytes()).hexdigest()


def _check(image: torch.Tensor, target: dict, expected: dict) -> None:
    assert image.dtype == torch.uint8
    assert target["image_id"] == expected["image_id"]
    assert list(image.shape) == expected["shape"]
    assert _sha1(image) == expected["uint8_sha1"]
    as_float = TO_FLOAT.normalize(image)
    assert as_float.dtype == torch.float32
    assert _sha1(as_float) == expected["float_sha1"]
    assert target["boxes"].dtype == torch.float32
    assert target["boxes"].tolist() == expected["boxes"]
    assert target["labels"].tolist() == expected["labels"]


@pytest.mark.parametrize("num_workers", [0, 2])
def test_train_loader_yields_the_recorded_samples(dataset, golden, num_workers: int) -> None:
    loader = build_train_loader(dataset, 3, seed=11, num_workers=num_workers, transforms=TF)
    batches = list(islice(loader, len(golden["train"])))
    for batch, expected in zip(batches, golden["train"], strict=True):
        assert len(batch.images) == len(expected)
        for image, target, exp in zip(batch.images, batch.targets, expected, strict=True):
            _check(image, target, exp)


def test_test_loader_yields_the_recorded_samples(dataset, golden) -> None:
    batches = list(build_test_loader(dataset, 2, num_workers=0))
    assert len(batches) == len(golden["test"])
    for (images, targets), expected in zip(batches, golden["test"], strict=True):
        for image, target, exp in zip(images, targets, expected, strict=True):
            _check(image, target, exp)

