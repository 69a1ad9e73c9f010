"""Post-processing: per-class NMS, thresholds, per-image top-k, clipping, batching."""

from __future__ import annotations

import torch
from torchvision.models.detection._utils import BoxCoder

from rfcn.models.postprocess import DetectionPostProcessor

CODER = BoxCoder((10.0, 10.0, 5.0, 5.0))


def _logits(probs: list[list[float]]) -> torch.Tensor:
    return torch.tensor(probs).log()


def test_per_class_nms_threshold_and_labels() -> None:
    post = DetectionPostProcessor(CODER, score_thresh=0.2, nms_thresh=0.3, detections_per_img=10)
    rois = torch.tensor([[0.0, 10, 10, 50, 50], [0, 11, 11, 51, 51], [0, 60, 60, 90, 90]])
    logits = _logits([[0.1, 0.6, 0.3], [0.1, 0.5, 0.4], [0.85, 0.1, 0.05]])
    (det,) = post(logits, torch.zeros(3, 4), rois, [(100, 100)])
    # class 1: RoI 1 suppressed by RoI 0; class 2: RoI 1 (0.4) beats RoI 0 (0.3) -> 0 suppressed;
    # RoI 2 is below the threshold for both classes
    assert det["labels"].tolist() == [1, 2]
    torch.testing.assert_close(det["scores"], torch.tensor([0.6, 0.4]))
    torch.testing.assert_close(det["boxes"], rois[[0, 1], 1:])


def test_batched_images_topk_and_clipping() -> None:
    post = DetectionPostProcessor(CODER, score_thresh=0.0, nms_thresh=0.3, detections_per_img=2)
    g = torch.Generator().manual_seed(0)
    xy = torch.arange(8, dtype=torch.float32)[:, None] * 30
    boxes = torch.cat([xy, xy, xy + 20, xy + 20], dim=1)  # disjoint, last ones leave the image
    rois = torch.cat([torch.tensor([0.0] * 3 + [1.0] * 5)[:, None], boxes], dim=1)
    logits = torch.randn(8, 4, generator=g)
    dets = post(logits, torch.zeros(8, 4), rois, [(55, 55), (300, 240)])
    assert [len(d["boxes"]) for d in dets] == [2, 2]
    probs = logits.softmax(-1)[:, 1:]
    # image 0: RoI 2 (60..80) lies outside the 55×55 image and is clipped to nothing
    for d, rows in zip(dets, (slice(0, 2), slice(3, 8)), strict=True):
        assert torch.allclose(d["scores"], probs[rows].flatten().topk(2).values)
    assert dets[0]["boxes"].max() <= 55 and dets[1]["boxes"][:, 0::2].max() <= 240


def test_class_specific_deltas_decode_per_class() -> None:
    post = DetectionPostProcessor(CODER, score_thresh=0.0, nms_thresh=0.3, detections_per_img=5)
    rois = torch.tensor([[0.0, 10, 10, 30, 30]])
    deltas = torch.zeros(1, 3, 4)
    deltas[0, 2, 0] = 10 * 0.5  # class 2 moves right by half a width (10 px)
    (det,) = post(_logits([[0.2, 0.3, 0.5]]), deltas.reshape(1, 12), rois, [(100, 100)])
    by_label = {int(lab): box for lab, box in zip(det["labels"], det["boxes"], strict=True)}
    torch.testing.assert_close(by_label[1], torch.tensor([10.0, 10, 30, 30]))
    torch.testing.assert_close(by_label[2], torch.tensor([20.0, 10, 40, 30]))


def test_no_rois_and_nothing_above_threshold() -> None:
    post = DetectionPostProcessor(CODER, score_thresh=0.9, nms_thresh=0.3, detections_per_img=5)
    dets = post(torch.zeros(0, 3), torch.zeros(0, 4), torch.zeros(0, 5), [(10, 10), (20, 20)])
    assert [d["boxes"].shape for d in dets] == [(0, 4), (0, 4)]
    dets = post(torch.zeros(2, 3), torch.zeros(2, 4), torch.tensor([[0.0, 1, 1, 5, 5]] * 2),
                [(10, 10)])
    assert dets[0]["labels"].dtype == torch.int64 and len(dets[0]["labels"]) == 0


def _full_nms_reference(post: DetectionPostProcessor, logits: torch.Tensor, deltas: torch.Tensor,
                        rois: torch.Tensor, shapes: list[tuple[int, int]]) -> list[dict]:
    """NMS over every (RoI, class) candidate, then the per-image top-k (no early cut)."""
    from torchvision.ops import batched_nms, clip_boxes_to_image

    probs = logits.softmax(-1)[:, 1:]
    sets = deltas.shape[1] // 4
    boxes = CODER.decode_single(deltas, rois[:, 1:]).reshape(len(rois), sets, 4)
    if sets == probs.shape[1] + 1:
        boxes = boxes[:, 1:]
    out = []
    for i, (h, w) in enumerate(shapes):
        rows = torch.where(rois[:, 0] == i)[0]
        r, c = torch.where(probs[rows] > post.score_thresh)
        b = clip_boxes_to_image(boxes[rows[r], c if boxes.shape[1] > 1 else 0], (h, w))
        s = probs[rows[r], c]
        ok = ((b[:, 2:] - b[:, :2]) >= 1e-2).all(dim=1)
        b, s, c = b[ok], s[ok], c[ok]
        keep = batched_nms(b, s, c, post.nms_thresh)[: post.detections_per_img]
        out.append({"boxes": b[keep], "labels": c[keep] + 1, "scores": s[keep]})
    return out


def test_topk_nms_equals_nms_over_every_candidate() -> None:
    """The early cut (`_nms_topk`) keeps the detections of NMS over all R·(C-1) candidates,
    also when an image needs more than the first cut (many classes, low threshold)."""
    g = torch.Generator().manual_seed(0)
    for num_rois, num_classes, agnostic, score_thresh, per_img, spread in (
        (600, 81, True, 0.0, 100, 400), (300, 21, False, 0.0, 100, 400),
        (500, 5, True, 0.05, 300, 400), (400, 81, True, 0.0, 1, 400),
        (900, 2, True, 0.0, 100, 5),  # near-identical boxes: the cut must grow (×4) twice
    ):
        xy = torch.rand(num_rois, 2, generator=g) * spread
        wh = torch.rand(num_rois, 2, generator=g) * 200 + 1
        img = torch.randint(0, 2, (num_rois, 1), generator=g).float()
        rois = torch.cat([img, xy, xy + wh], dim=1)
        logits = torch.randn(num_rois, num_classes, generator=g) * 2
        deltas = torch.randn(num_rois, 4 if agnostic else 4 * num_classes, generator=g)
        post = DetectionPostProcessor(CODER, score_thresh, 0.3, per_img)
        shapes = [(450, 500), (500, 450)]
        for got, want in zip(post(logits, deltas, rois, shapes),
                             _full_nms_reference(post, logits, deltas, rois, shapes), strict=True):
            for key in ("boxes", "labels", "scores"):
                torch.testing.assert_close(got[key], want[key], rtol=0, atol=0)
