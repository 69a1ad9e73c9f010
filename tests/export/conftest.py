"""A tiny detector with varied outputs, test images, and a tolerant detection comparison."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor

from rfcn.models import RFCN, rfcn_resnet18

# Sizes (h, w): landscape, not divisible by 16 (and portrait), square, two that the max_size
# bound resizes (tall, and a thin strip resized to 8 px high), and the smallest accepted.
IMAGE_SIZES = ((100, 130), (77, 61), (64, 64), (300, 97), (20, 400), (2, 3))
BOX_ATOL, SCORE_ATOL = 1e-3, 1e-4


def tiny_detector(ps_op: str) -> RFCN:
    """R-18 R-FCN with a small head and random weights, scaled so that RPN objectness and
    class scores spread out (random init gives near-uniform scores) and there are detections."""
    torch.manual_seed(0)
    model = rfcn_resnet18(
        4, min_size=96, max_size=160, k=3, head_dim=32, rpn_dim=32, anchor_sizes=(32, 64),
        rpn_pre_nms_top_n_test=200, rpn_post_nms_top_n_test=40, box_score_thresh=0.01,
        ps_op=ps_op, norm="bn")
    with torch.no_grad():
        model.rpn.head.cls_logits.weight.mul_(100)
        model.head.cls_maps.weight.mul_(300)
        model.head.box_maps.weight.mul_(100)
    return model.eval()


def sample_images(seed: int = 1) -> list[Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return [torch.rand(3, h, w, generator=gen) for h, w in IMAGE_SIZES]


def _by_score(det: dict[str, Tensor]) -> dict[str, Tensor]:
    """Sorted by decreasing score; equal scores by label, then box (deterministic)."""
    keys = [det["boxes"][:, i] for i in reversed(range(4))] + [det["labels"], -det["scores"]]
    order = torch.arange(len(det["scores"]))
    for key in keys:  # lexicographic: the last key sorted is the primary one
        order = order[torch.sort(key[order], stable=True).indices]
    return {k: v[order] for k, v in det.items()}


def assert_same_detections(got: dict[str, Tensor], expected: dict[str, Tensor]) -> None:
    """Same count and labels, boxes within BOX_ATOL px, scores within SCORE_ATOL.

    Both are sorted by score; two detections whose scores differ by less than the float noise
    may come out in either order, so each expected detection is paired with the first unused
    one of the same label within tolerance at most a few places away.
    """
    assert got["labels"].dtype == torch.int64 and got["boxes"].shape[1:] == (4,)
    assert len(got["scores"]) == len(expected["scores"]), (
        f"{len(got['scores'])} detections, expected {len(expected['scores'])}")
    got, expected = _by_score(got), _by_score(expected)
    used: set[int] = set()
    for i in range(len(expected["scores"])):
        window = range(max(0, i - 3), min(len(got["scores"]), i + 4))
        match = next((j for j in window if j not in used
                      and got["labels"][j] == expected["labels"][i]
                      and abs(float(got["scores"][j] - expected["scores"][i])) <= SCORE_ATOL
                      and float((got["boxes"][j] - expected["boxes"][i]).abs().max())
                      <= BOX_ATOL), None)
        assert match is not None, (
            f"detection {i} (label {int(expected['labels'][i])}, score "
            f"{float(expected['scores'][i]):.6f}, box {expected['boxes'][i].tolist()}) has no "
            f"match among {[(int(got['labels'][j]), float(got['scores'][j])) for j in window]}")
        used.add(match)


@pytest.fixture(autouse=True)
def _few_threads() -> None:
    torch.set_num_threads(min(2, torch.get_num_threads()))
