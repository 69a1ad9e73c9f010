"""OHEM: the highest-loss RoIs are back-propagated, NMS among them, per-image budget."""

from __future__ import annotations

import torch

from rfcn.models.losses import per_roi_losses, rfcn_loss
from rfcn.models.ohem import select_hard_examples


def _rois(image: int, boxes: list[list[float]]) -> torch.Tensor:
    b = torch.tensor(boxes)
    return torch.cat([torch.full((len(b), 1), float(image)), b], dim=1)


def test_selects_the_highest_losses_per_image() -> None:
    g = torch.Generator().manual_seed(0)
    xy = torch.rand(40, 2, generator=g) * 500
    boxes = torch.cat([xy, xy + 10], dim=1)  # disjoint enough: no NMS suppression
    rois = torch.cat([_rois(0, boxes[:25].tolist()), _rois(1, boxes[25:].tolist())])
    losses = torch.rand(40, generator=g)
    keep = select_hard_examples(losses, rois, batch_size_per_image=5, nms_thresh=1.0)
    top0, top1 = torch.topk(losses[:25], 5).indices, torch.topk(losses[25:], 5).indices
    expected = torch.cat([top0, 25 + top1])
    assert keep.tolist() == expected.tolist()
    # an image with fewer RoIs than the budget keeps all of them
    keep = select_hard_examples(losses, rois, batch_size_per_image=20, nms_thresh=1.0)
    assert keep.numel() == 20 + 15


def test_nms_removes_overlapping_lower_loss_rois() -> None:
    rois = _rois(0, [[0, 0, 10, 10], [0, 0, 10, 11], [50, 50, 60, 60], [100, 0, 110, 10]])
    losses = torch.tensor([0.9, 1.0, 0.1, 0.5])
    keep = select_hard_examples(losses, rois, batch_size_per_image=3, nms_thresh=0.7)
    assert keep.tolist() == [1, 3, 2]


def test_loss_is_mean_over_kept_rois_only() -> None:
    torch.manual_seed(0)
    logits = torch.randn(6, 3, requires_grad=True)
    deltas = torch.randn(6, 4, requires_grad=True)
    labels = torch.tensor([0, 1, 2, 0, 1, 0])
    targets = torch.randn(6, 4) * (labels > 0)[:, None]
    keep = torch.tensor([1, 4, 5])
    out = rfcn_loss(logits, deltas, labels, targets, keep)
    cls, box = per_roi_losses(logits, deltas, labels, targets)
    torch.testing.assert_close(out["loss_classifier"], cls[keep].mean())
    torch.testing.assert_close(out["loss_box_reg"], box[keep].sum() / 3)
    sum(out.values()).backward()
    assert logits.grad[[0, 2, 3]].abs().sum() == 0  # unselected RoIs get no gradient
    assert logits.grad[keep].abs().sum() > 0
    assert box[labels == 0].abs().sum() == 0  # background has no box loss


def test_class_specific_box_loss_reads_the_label_column() -> None:
    deltas = torch.zeros(2, 3, 4)
    deltas[0, 2] = 1.0  # RoI 0 (label 2) predicts 1 in its class column only
    labels = torch.tensor([2, 1])
    _, box = per_roi_losses(torch.zeros(2, 3), deltas.reshape(2, 12), labels, torch.zeros(2, 4))
    assert box[0] > 0 and box[1] == 0


def test_model_backpropagates_only_hard_rois(monkeypatch) -> None:  # noqa: ANN001
    import rfcn.models.rfcn as rfcn_module
    from tests.models.conftest import tiny_batch, tiny_model

    captured = {}
    real = rfcn_module.select_hard_examples

    def spy(roi_losses, rois, batch_size_per_image, nms_thresh):  # noqa: ANN001, ANN202
        keep = real(roi_losses, rois, batch_size_per_image, nms_thresh)
        captured.update(losses=roi_losses, rois=rois, keep=keep, n=batch_size_per_image)
        return keep

    monkeypatch.setattr(rfcn_module, "select_hard_examples", spy)
    torch.manual_seed(0)
    model = tiny_model(box_batch_size_per_image=8).train()
    images, targets = tiny_batch()
    model(images, targets)
    keep, losses, rois = captured["keep"], captured["losses"], captured["rois"]
    assert captured["n"] == 8 and keep.numel() <= 16
    # every proposal (50 per image) plus the ground truth was scored
    assert rois.shape[0] > 16
    for img in (0, 1):
        mine = keep[rois[keep, 0] == img]
        assert mine.numel() == 8
        # the hardest RoI of the image is always kept
        in_img = torch.where(rois[:, 0] == img)[0]
        assert int(in_img[losses[in_img].argmax()]) in mine.tolist()
