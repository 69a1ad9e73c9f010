"""Tiny models and inputs shared by the model tests (ResNet-18, small head, ~100 px images)."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import Tensor

from rfcn.models import RFCN, rfcn_resnet18

TINY_KWARGS: dict[str, Any] = dict(
    min_size=96, max_size=128, head_dim=32, rpn_dim=32, k=3, anchor_sizes=(16, 32, 64),
    rpn_pre_nms_top_n_train=200, rpn_pre_nms_top_n_test=200,
    rpn_post_nms_top_n_train=50, rpn_post_nms_top_n_test=50,
    box_batch_size_per_image=16,
)


def tiny_model(num_classes: int = 4, **kwargs: Any) -> RFCN:
    return rfcn_resnet18(num_classes, **{**TINY_KWARGS, **kwargs})


def tiny_batch() -> tuple[list[Tensor], list[dict[str, Tensor]]]:
    """Two images of different sizes; the second has no boxes."""
    g = torch.Generator().manual_seed(0)
    images = [torch.rand(3, 96, 112, generator=g), torch.rand(3, 80, 96, generator=g)]
    targets = [
        {"boxes": torch.tensor([[10.0, 12.0, 50.0, 60.0], [60.0, 30.0, 100.0, 90.0]]),
         "labels": torch.tensor([1, 3])},
        {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)},
    ]
    return images, targets


@pytest.fixture(autouse=True)
def _few_threads() -> None:
    torch.set_num_threads(min(2, torch.get_num_threads()))
