"""`DetectionPostProcessor.single_image` (one class-offset NMS over all candidates, the export
path) gives the eager post-processor's detections, in eager and through onnxruntime, also
when nothing passes the threshold and when there are no RoIs."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import Tensor, nn
from torchvision.models.detection._utils import BoxCoder

from rfcn.models.postprocess import DetectionPostProcessor
from tests.export.conftest import assert_same_detections

ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

NUM_CLASSES, IMAGE_HW = 5, (120, 160)


class _SingleImage(nn.Module):
    def __init__(self, post: DetectionPostProcessor) -> None:
        super().__init__()
        self.post = post

    def forward(self, logits: Tensor, deltas: Tensor, rois: Tensor,
                image_hw: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        return self.post.single_image(logits, deltas, rois, image_hw)


def _inputs(num_rois: int, gen: torch.Generator, background: float = 0.0
            ) -> tuple[Tensor, Tensor, Tensor]:
    """Class-specific outputs of `num_rois` RoIs of image 0 (tied scores included);
    `background` is added to the background logit."""
    logits = torch.randn(num_rois, NUM_CLASSES, generator=gen) * 3
    logits[:, 0] += background
    logits[: num_rois // 4] = logits[num_rois // 4: 2 * (num_rois // 4)]  # exact score ties
    deltas = torch.randn(num_rois, 4 * NUM_CLASSES, generator=gen) * 0.3
    xy = torch.rand(num_rois, 2, generator=gen) * torch.tensor(IMAGE_HW[::-1]) * 0.8
    wh = torch.rand(num_rois, 2, generator=gen) * 60 + 1
    rois = torch.cat([torch.zeros(num_rois, 1), xy, xy + wh], dim=1)
    return logits, deltas, rois


def _as_dict(boxes: Tensor, scores: Tensor, labels: Tensor) -> dict[str, Tensor]:
    return {"boxes": boxes, "scores": scores, "labels": labels}


def test_single_image_equals_the_batched_postprocessor(tmp_path: Path) -> None:
    post = DetectionPostProcessor(BoxCoder((10.0, 10.0, 5.0, 5.0)), 0.05, 0.3, 40)
    gen = torch.Generator().manual_seed(0)
    example = _inputs(50, gen)
    hw = torch.tensor([IMAGE_HW])
    r = torch.export.Dim("r", min=0, max=100_000)
    program = torch.onnx.export(
        _SingleImage(post).eval(), (*example, hw), dynamo=True, opset_version=18,
        verbose=False, input_names=["logits", "deltas", "rois", "image_hw"],
        dynamic_shapes={"logits": {0: r}, "deltas": {0: r}, "rois": {0: r}, "image_hw": None})
    program.save(str(tmp_path / "post.onnx"))
    session = ort.InferenceSession(str(tmp_path / "post.onnx"),
                                   providers=["CPUExecutionProvider"])
    cases = [_inputs(n, gen) for n in (300, 7, 0)] + [_inputs(80, gen, background=30.0)]
    for logits, deltas, rois in cases:
        (expected,) = post(logits, deltas, rois, [IMAGE_HW])
        eager = _as_dict(*post.single_image(logits, deltas, rois, hw))
        for key in expected:  # same code path up to the NMS: exactly equal
            torch.testing.assert_close(eager[key], expected[key], rtol=0, atol=0)
        feeds = {"logits": logits.numpy(), "deltas": deltas.numpy(), "rois": rois.numpy(),
                 "image_hw": hw.numpy()}
        got = _as_dict(*(torch.from_numpy(v) for v in session.run(None, feeds)))
        assert_same_detections(got, expected)
    assert len(post(*cases[-1], [IMAGE_HW])[0]["scores"]) == 0  # all background
