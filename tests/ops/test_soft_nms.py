"""Soft-NMS (Bodla et al. 2017) against a plain per-box reference loop, and in the model's
post-processing (issue 13 §3)."""

from __future__ import annotations

import math

import pytest
import torch

from rfcn.ops.soft_nms import soft_nms
from tests.models.conftest import tiny_batch, tiny_model


def _iou(a: list[float], b: list[float]) -> float:
    iw = min(a[2], b[2]) - max(a[0], b[0])
    ih = min(a[3], b[3]) - max(a[1], b[1])
    if iw <= 0 or ih <= 0:
        return 0.0
    inter = iw * ih
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def _reference(boxes, scores, classes, method, thresh, sigma, min_score):
    """The paper's Algorithm 1, one box at a time, per class; returns {index: score}."""
    out = {}
    for c in sorted(set(classes)):
        pending = {i: s for i, s in enumerate(scores) if classes[i] == c and s >= min_score}
        while pending:
            m = max(pending, key=lambda i: (pending[i], -i))
            out[m] = pending.pop(m)
            for i in list(pending):
                iou = _iou(boxes[m], boxes[i])
                if method == "soft_linear":
                    pending[i] *= (1 - iou) if iou > thresh else 1.0
                else:
                    pending[i] *= math.exp(-iou * iou / sigma)
                if pending[i] < min_score:
                    del pending[i]
    return out


@pytest.mark.parametrize("method", ["soft_linear", "soft_gaussian"])
@pytest.mark.parametrize("seed", range(6))
def test_soft_nms_equals_the_reference_loop(method: str, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    n = 60
    xy = torch.rand(n, 2, generator=g) * 80
    wh = 5 + torch.rand(n, 2, generator=g) * 40
    boxes = torch.cat([xy, xy + wh], 1).double()
    scores = torch.rand(n, generator=g).double()
    classes = torch.randint(0, 3, (n,), generator=g)
    keep, new = soft_nms(boxes, scores, classes, method, 0.3, 0.5, 0.05)
    want = _reference(boxes.tolist(), scores.tolist(), classes.tolist(), method, 0.3, 0.5, 0.05)
    got = dict(zip(keep.tolist(), new.tolist(), strict=True))
    assert got.keys() == want.keys()
    for i, s in want.items():
        assert got[i] == pytest.approx(s, rel=1e-12)
    assert torch.all(new[:-1] >= new[1:])  # by decreasing decayed score


def test_soft_nms_degenerate_inputs() -> None:
    empty = torch.zeros(0, 4)
    keep, new = soft_nms(empty, torch.zeros(0), torch.zeros(0, dtype=torch.int64), "soft_linear")
    assert keep.numel() == 0 and new.numel() == 0
    box = torch.tensor([[0.0, 0.0, 10.0, 10.0]] * 3)
    keep, new = soft_nms(box, torch.tensor([0.9, 0.8, 0.7]), torch.tensor([0, 0, 1]),
                         "soft_gaussian", sigma=0.5, min_score=0.001)
    # identical boxes of one class decay by exp(-1/0.5); the other class is untouched
    assert keep.tolist() == [0, 2, 1]
    assert new.tolist() == pytest.approx([0.9, 0.7, 0.8 * math.exp(-2.0)])
    with pytest.raises(ValueError, match="method"):
        soft_nms(box, torch.ones(3), torch.zeros(3, dtype=torch.int64), "soft")


@pytest.mark.parametrize("method", ["soft_linear", "soft_gaussian"])
def test_model_with_soft_nms_keeps_more_overlapping_boxes(method: str) -> None:
    torch.manual_seed(0)
    hard = tiny_model(box_score_thresh=0.0, box_detections_per_img=300).eval()
    soft = tiny_model(box_score_thresh=0.0, box_detections_per_img=300, box_nms=method).eval()
    soft.load_state_dict(hard.state_dict())
    images, _ = tiny_batch()
    with torch.no_grad():
        a, b = hard(images), soft(images)
    for x, y in zip(a, b, strict=True):
        # the top detection is the same; soft-NMS keeps what NMS removes, with lower scores
        assert torch.equal(x["boxes"][0], y["boxes"][0])
        assert len(y["scores"]) >= len(x["scores"])
        assert torch.all(y["scores"][:-1] >= y["scores"][1:])
    with pytest.raises(ValueError, match="box_nms"):
        tiny_model(box_nms="soft")
