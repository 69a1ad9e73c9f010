"""PS head: map channel counts, both maps through rfcn.ops, voting, torch.compile."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor

import rfcn.ops
from rfcn.models.ps_head import PSRoIHead
from tests.models.conftest import tiny_batch, tiny_model


@pytest.mark.parametrize(("agnostic", "box_outputs"), [(True, 4), (False, 4 * 6)])
def test_map_channel_counts(agnostic: bool, box_outputs: int) -> None:
    k, num_classes = 3, 6
    head = PSRoIHead(in_channels=8, head_dim=16, num_classes=num_classes, k=k,
                     class_agnostic_bbox=agnostic)
    cls_maps, box_maps = head.score_maps(torch.rand(2, 8, 5, 7))
    assert cls_maps.shape == (2, k * k * num_classes, 5, 7)
    assert box_maps.shape == (2, k * k * box_outputs, 5, 7)
    rois = torch.tensor([[0.0, 0, 0, 40, 40], [1, 16, 8, 100, 70], [1, 3, 3, 5, 5]])
    logits, deltas = head(torch.rand(2, 8, 5, 7), rois)
    assert logits.shape == (3, num_classes) and deltas.shape == (3, box_outputs)


def test_model_builds_paper_channel_counts() -> None:
    model = tiny_model(num_classes=4, k=7, class_agnostic_bbox=False)
    assert model.head.cls_maps.out_channels == 49 * 4
    assert model.head.box_maps.out_channels == 49 * 4 * 4
    assert tiny_model(num_classes=4, k=7).head.box_maps.out_channels == 49 * 4


@pytest.mark.parametrize(("ps_op", "op_name"), [("pool", "ps_roi_pool"), ("align", "ps_roi_align")])
def test_class_and_box_maps_go_through_rfcn_ops(monkeypatch, ps_op: str, op_name: str) -> None:  # noqa: ANN001
    real = getattr(rfcn.ops, op_name)
    seen: list[tuple[int, int]] = []

    def spy(inp: Tensor, boxes: Tensor, output_size: int, spatial_scale: float, *args) -> Tensor:  # noqa: ANN002
        seen.append((inp.shape[1], output_size))
        assert spatial_scale == pytest.approx(1 / 16)
        return real(inp, boxes, output_size, spatial_scale, *args)

    monkeypatch.setattr(rfcn.ops, op_name, spy)
    model = tiny_model(num_classes=4, k=3, ps_op=ps_op).eval()
    images, targets = tiny_batch()
    with torch.no_grad():
        model(images)
    assert sorted(seen) == sorted([(9 * 4, 3), (9 * 4, 3)])  # class maps and agnostic box maps
    seen.clear()
    model.train()
    model(images, targets)
    assert len(seen) == 2


def test_vote_is_the_mean_of_the_pooled_bins() -> None:
    head = PSRoIHead(in_channels=4, head_dim=4, num_classes=2, k=2)
    maps = torch.arange(2 * 2 * 2 * 2, dtype=torch.float32).reshape(1, 8, 1, 2).repeat(1, 1, 2, 1)
    rois = torch.tensor([[0.0, 0, 0, 31, 31]])
    pooled = rfcn.ops.ps_roi_pool(maps, rois, 2, 1 / 16)
    torch.testing.assert_close(head.pool_and_vote(maps, rois), pooled.mean(dim=(2, 3)))


def test_head_compiles_without_graph_breaks() -> None:
    torch._dynamo.reset()
    head = PSRoIHead(in_channels=8, head_dim=8, num_classes=3, k=3).eval()
    feats = torch.rand(1, 8, 6, 6)
    rois = torch.tensor([[0.0, 0, 0, 50, 60], [0, 10, 20, 90, 90]])
    explanation = torch._dynamo.explain(head)(feats, rois)
    assert explanation.graph_break_count == 0, explanation.break_reasons
    assert explanation.graph_count == 1
    torch._dynamo.reset()
