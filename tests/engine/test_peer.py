"""The torchvision peer (scripts/peer_torchvision.py): sized like the run's R-FCN, trained on
rfcn's uint8 batches, evaluated at the R-FCN's test size, and accepted by rfcn's trainer."""

from __future__ import annotations

import torch
from torch import nn
from torchvision.models.detection import FasterRCNN

from rfcn.assembly.peer import PeerDetector, build_peer_model
from rfcn.models.spec import RFCNSpec


def _spec() -> RFCNSpec:
    return RFCNSpec.create("resnet18", 3, min_size=96, max_size=128, train_min_sizes=(80, 112),
                           anchor_sizes=(16, 32, 64), aspect_ratios=(0.5, 1.0))


def test_peer_is_torchvision_faster_rcnn_sized_like_the_rfcn() -> None:
    peer = build_peer_model(_spec(), 3)
    assert isinstance(peer, PeerDetector) and isinstance(peer.detector, FasterRCNN)
    gen = peer.detector.rpn.anchor_generator
    assert [s[0] for s in gen.sizes] == [16, 32, 64, 128, 256]
    assert all(tuple(r) == (0.5, 1.0) for r in gen.aspect_ratios)
    norms = [m for m in peer.modules() if isinstance(m, nn.BatchNorm2d)]
    assert norms and all(m.weight.requires_grad for m in norms)  # trainable: from scratch
    assert peer.detector.roi_heads.box_predictor.cls_score.out_features == 3
    assert peer.detector.transform.max_size == 128


def test_peer_trains_on_uint8_and_tests_at_min_size() -> None:
    torch.manual_seed(0)
    peer = build_peer_model(_spec(), 3)
    images = [torch.randint(0, 256, (3, 100, 120), dtype=torch.uint8) for _ in range(2)]
    targets = [{"boxes": torch.tensor([[10.0, 10.0, 50.0, 60.0]]), "labels": torch.tensor([1])},
               {"boxes": torch.tensor([[20.0, 30.0, 90.0, 80.0]]), "labels": torch.tensor([2])}]
    peer.train()
    losses = peer(images, targets)
    assert set(losses) == {"loss_classifier", "loss_box_reg", "loss_objectness",
                           "loss_rpn_box_reg"}
    assert all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    assert peer.detector.transform.min_size == (80, 112)
    peer.eval()
    with torch.no_grad():
        out = peer(images)
    assert peer.detector.transform.min_size == (96,)
    assert len(out) == 2 and out[0]["boxes"].shape[1] == 4
    if len(out[0]["boxes"]):  # boxes come back in input-image pixels
        assert float(out[0]["boxes"][:, 2].max()) <= 120 + 1e-3
