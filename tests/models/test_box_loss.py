"""The head's box loss: smooth-L1 unchanged, IoU losses on the decoded boxes against a float64
reference, background RoIs without box loss, and the key through spec and model."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torchvision.models.detection._utils import BoxCoder

from rfcn.models.losses import SMOOTH_L1_BETA, BoxRegressionLoss, per_roi_losses, rfcn_loss
from rfcn.models.spec import RFCNSpec
from tests.models.conftest import tiny_batch, tiny_model

WEIGHTS = (10.0, 10.0, 5.0, 5.0)


def _random_rois(n: int, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    xy = torch.rand(n, 2, generator=g) * 200
    wh = 8 + torch.rand(n, 2, generator=g) * 80
    proposals = torch.cat([xy, xy + wh], dim=1)
    jitter = (torch.rand(n, 4, generator=g) - 0.5) * 0.4 * wh.repeat(1, 2)
    return proposals, proposals + jitter  # (proposals, their ground-truth boxes)


def _decode64(deltas: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    """The R-CNN decoding in float64, written out (no clamp: the deltas here are small)."""
    d, b = deltas.double(), boxes.double()
    w, h = b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]
    cx, cy = b[:, 0] + 0.5 * w, b[:, 1] + 0.5 * h
    dx, dy, dw, dh = (d[:, i] / WEIGHTS[i] for i in range(4))
    pcx, pcy, pw, ph = dx * w + cx, dy * h + cy, torch.exp(dw) * w, torch.exp(dh) * h
    return torch.stack([pcx - 0.5 * pw, pcy - 0.5 * ph, pcx + 0.5 * pw, pcy + 0.5 * ph], dim=1)


def _iou_losses64(a: torch.Tensor, b: torch.Tensor) -> dict[str, torch.Tensor]:
    """1 - IoU, 1 - GIoU (Rezatofighi et al. 2019) and 1 - DIoU (Zheng et al. 2020), one pair
    per row, float64."""
    area = lambda x: (x[:, 2] - x[:, 0]) * (x[:, 3] - x[:, 1])  # noqa: E731
    lt, rb = torch.max(a[:, :2], b[:, :2]), torch.min(a[:, 2:], b[:, 2:])
    inter = (rb - lt).clamp(min=0).prod(dim=1)
    union = area(a) + area(b) - inter
    iou = inter / union
    hull_wh = torch.max(a[:, 2:], b[:, 2:]) - torch.min(a[:, :2], b[:, :2])
    hull = hull_wh.prod(dim=1)
    centre = ((a[:, :2] + a[:, 2:]) / 2 - (b[:, :2] + b[:, 2:]) / 2).pow(2).sum(dim=1)
    diou = 1 - iou + centre / hull_wh.pow(2).sum(dim=1)
    aspect = lambda x: torch.atan((x[:, 2] - x[:, 0]) / (x[:, 3] - x[:, 1]))  # noqa: E731
    v = 4 / math.pi**2 * (aspect(b) - aspect(a)).pow(2)
    alpha = v / (1 - iou + v)
    return {"iou": 1 - iou, "giou": 1 - (iou - (hull - union) / hull), "diou": diou,
            "ciou": diou + alpha * v}


def test_smooth_l1_is_the_masked_sum_it_always_was() -> None:
    g = torch.Generator().manual_seed(1)
    deltas, targets = torch.randn(30, 4, generator=g), torch.randn(30, 4, generator=g)
    labels = torch.randint(0, 3, (30,), generator=g)
    _, box = per_roi_losses(torch.zeros(30, 3), deltas, labels, targets)
    expected = F.smooth_l1_loss(deltas, targets, beta=SMOOTH_L1_BETA, reduction="none").sum(1)
    assert torch.equal(box, expected * (labels > 0).float())


@pytest.mark.parametrize("kind", ["giou", "diou", "ciou"])
def test_iou_losses_match_a_float64_reference_on_fresh_inputs(kind: str) -> None:
    g = torch.Generator().manual_seed(2)
    coder = BoxCoder(WEIGHTS)
    proposals, gt = _random_rois(64, g)
    targets = coder.encode_single(gt, proposals)
    deltas = (targets + 0.3 * torch.randn(64, 4, generator=g)).requires_grad_()
    labels = torch.randint(0, 3, (64,), generator=g)
    _, box = per_roi_losses(torch.zeros(64, 3), deltas, labels, targets, proposals,
                            BoxRegressionLoss(kind, coder))
    fg = labels > 0
    assert torch.all(box[~fg] == 0)
    pred64, gt64 = _decode64(deltas.detach(), proposals), gt.double()
    ref = _iou_losses64(pred64[fg], gt64[fg])
    torch.testing.assert_close(box[fg].double(), ref[kind], rtol=1e-4, atol=1e-5)
    assert torch.all(ref[kind] >= ref["iou"] - 1e-12) and not torch.equal(ref[kind], ref["iou"])
    box.sum().backward()
    assert deltas.grad[~fg].abs().sum() == 0 and deltas.grad[fg].abs().sum() > 0


def test_iou_loss_vanishes_on_perfect_deltas_and_is_weighted() -> None:
    g = torch.Generator().manual_seed(3)
    coder = BoxCoder(WEIGHTS)
    proposals, gt = _random_rois(16, g)
    targets = coder.encode_single(gt, proposals)
    labels = torch.ones(16, dtype=torch.int64)
    _, perfect = per_roi_losses(torch.zeros(16, 2), targets.clone(), labels, targets, proposals,
                                BoxRegressionLoss("giou", coder))
    assert perfect.abs().max() < 1e-5
    off = targets + 0.5
    _, one = per_roi_losses(torch.zeros(16, 2), off, labels, targets, proposals,
                            BoxRegressionLoss("giou", coder))
    _, two = per_roi_losses(torch.zeros(16, 2), off, labels, targets, proposals,
                            BoxRegressionLoss("giou", coder, weight=2.0))
    torch.testing.assert_close(two, 2 * one)
    out = rfcn_loss(torch.zeros(16, 2), off, labels, targets, None, proposals,
                    BoxRegressionLoss("giou", coder))
    assert math.isclose(out["loss_box_reg"].item(), one.mean().item(), rel_tol=1e-6)


def test_bad_box_loss_arguments_are_named() -> None:
    with pytest.raises(ValueError, match="box_loss must be"):
        BoxRegressionLoss("iou")
    with pytest.raises(ValueError, match="box_coder"):
        BoxRegressionLoss("giou")
    with pytest.raises(ValueError, match="box_loss must be one of"):
        RFCNSpec(num_classes=3).replace(box_loss="l2")
    with pytest.raises(ValueError, match="box_loss_weight"):
        RFCNSpec(num_classes=3).replace(box_loss_weight=-1.0)


def test_model_trains_with_an_iou_loss_and_keeps_it_in_its_spec() -> None:
    torch.manual_seed(0)
    model = tiny_model(box_loss="ciou", box_loss_weight=2.0)
    assert model.box_loss.kind == "ciou" and model.box_loss.weight == 2.0
    spec = RFCNSpec.from_dict(model.spec.to_dict())
    assert spec.roi_sampling.box_loss == "ciou" and spec.roi_sampling.box_loss_weight == 2.0
    old = model.spec.to_dict()
    del old["roi_sampling"]["box_loss"], old["roi_sampling"]["box_loss_weight"]
    assert RFCNSpec.from_dict(old).roi_sampling.box_loss == "smooth_l1"  # older checkpoints
    images, targets = tiny_batch()
    model.train()
    losses = model(images, targets)
    assert torch.isfinite(losses["loss_box_reg"]) and losses["loss_box_reg"] > 0
    sum(losses.values()).backward()
    assert model.head.box_maps.weight.grad.abs().sum() > 0
