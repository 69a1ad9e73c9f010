"""A tiny R-FCN learns one synthetic image: every box found with IoU >= 0.7, score >= 0.5."""

from __future__ import annotations

import cv2
import numpy as np
import torch
from torchvision.ops import box_iou

from rfcn.models import rfcn_resnet18

# Typically done after 140 iterations (~30 s on 2 idle cores). Bounded by iterations, not
# wall time, so a busy machine makes the test slower but not flaky.
MAX_ITERS = 400


def shapes_image() -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """128×128 image: a red square (1), a green disc (2), a blue triangle (3)."""
    img = np.full((128, 128, 3), 30, np.uint8)
    cv2.rectangle(img, (8, 10), (47, 49), (230, 40, 40), -1)
    cv2.circle(img, (92, 34), 22, (40, 220, 40), -1)
    tri = np.array([[60, 70], [30, 120], [90, 120]], np.int32)
    cv2.fillPoly(img, [tri], (40, 60, 230))
    boxes = torch.tensor([[8.0, 10, 48, 50], [70, 12, 115, 57], [30, 70, 91, 121]])
    image = torch.from_numpy(img).permute(2, 0, 1).float() / 255
    return image, {"boxes": boxes, "labels": torch.tensor([1, 2, 3])}


def found_all(model: torch.nn.Module, image: torch.Tensor, target: dict) -> bool:
    model.eval()
    with torch.no_grad():
        det = model([image])[0]
    model.train()
    for box, label in zip(target["boxes"], target["labels"], strict=True):
        mine = (det["labels"] == label) & (det["scores"] >= 0.5)
        if not mine.any() or box_iou(box[None], det["boxes"][mine]).max() < 0.7:
            return False
    return True


def test_tiny_model_overfits_one_image() -> None:
    torch.manual_seed(0)
    model = rfcn_resnet18(
        4, min_size=128, max_size=128, head_dim=64, rpn_dim=64, k=3, anchor_sizes=(32, 64),
        rpn_pre_nms_top_n_train=300, rpn_post_nms_top_n_train=64,
        rpn_pre_nms_top_n_test=300, rpn_post_nms_top_n_test=64, box_batch_size_per_image=32,
    ).train()
    image, target = shapes_image()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-3, weight_decay=0.0)
    done, it = False, 0
    while not done and it < MAX_ITERS:
        for _ in range(20):
            losses = model([image], [target])
            opt.zero_grad()
            sum(losses.values()).backward()
            opt.step()
            it += 1
        done = found_all(model, image, target)
    assert done, f"not all boxes found after {it} iterations, losses {losses}"
