"""The whole detector exported: ONNX run by a stock onnxruntime, and a .pt2 ExportedProgram,
give the PyTorch model's detections on images of several sizes."""

from __future__ import annotations

import copy
import logging
from pathlib import Path

import pytest
import torch

from rfcn.export import DeployableRFCN, export_onnx, export_pt2, load_pt2
from rfcn.models import RFCN
from tests.export.conftest import assert_same_detections, sample_images, tiny_detector

ort = pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxscript")

PS_OPS = ("pool", "align")


@pytest.fixture(scope="module", params=PS_OPS)
def detector(request: pytest.FixtureRequest) -> RFCN:
    return tiny_detector(request.param)


@pytest.fixture(scope="module")
def expected(detector: RFCN) -> list[dict[str, torch.Tensor]]:
    """The model's detections, one image per call: the exports take one image, and a batch
    pads every image to the largest, which changes the features near the padding."""
    with torch.no_grad():
        return [detector([image])[0] for image in sample_images()]


@pytest.fixture(scope="module")
def onnx_file(detector: RFCN, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("onnx") / f"rfcn_{detector.head.ps_op}.onnx"
    assert export_onnx(detector, path, example_size=(120, 90)) == path
    return path


def test_deployable_module_equals_the_model(detector: RFCN,
                                            expected: list[dict[str, torch.Tensor]]) -> None:
    for ps_ops in ("torch", "custom"):
        module = DeployableRFCN(detector, ps_ops=ps_ops)
        for image, exp in zip(sample_images(), expected, strict=True):
            with torch.no_grad():
                boxes, labels, scores = module(image)
            assert_same_detections(dict(boxes=boxes, labels=labels, scores=scores), exp)


def test_no_detections(detector: RFCN) -> None:
    strict = copy.deepcopy(detector)
    strict.postprocessor.score_thresh = 1.0
    image = sample_images()[0]
    with torch.no_grad():
        boxes, labels, scores = DeployableRFCN(strict)(image)
        assert strict([image])[0]["boxes"].shape == (0, 4)
    assert boxes.shape == (0, 4) and labels.shape == (0,) and scores.shape == (0,)


def test_onnx_detections_equal_the_model(onnx_file: Path,
                                         expected: list[dict[str, torch.Tensor]]) -> None:
    from rfcn.export.onnx_runtime import OnnxDetector

    detector = OnnxDetector(onnx_file)
    assert detector.providers == ["CPUExecutionProvider"]
    images = sample_images()
    got = detector(images)
    assert len(got) == len(images)
    for i, (det, exp) in enumerate(zip(got, expected, strict=True)):
        assert len(exp["scores"]) > 5, f"image {i}: the test model should detect something"
        assert det["boxes"].dtype == torch.float32 and det["scores"].dtype == torch.float32
        assert_same_detections(det, exp)
    single = detector(images[1])  # one Tensor, not a list
    assert_same_detections(single[0], expected[1])


def test_onnx_graph_is_standard_onnx(onnx_file: Path) -> None:
    model = onnx.load(str(onnx_file))
    onnx.checker.check_model(model)
    domains = {node.domain for node in model.graph.node}
    domains |= {node.domain for f in model.functions for node in f.node}
    assert domains <= {"", "ai.onnx"}, domains
    ops = {node.op_type for node in model.graph.node}
    assert "NonMaxSuppression" in ops and "Resize" in ops
    (image,) = model.graph.input
    dims = image.type.tensor_type.shape.dim
    assert dims[0].dim_value == 3 and dims[1].dim_param and dims[2].dim_param  # dynamic H, W


def test_pt2_round_trip(detector: RFCN, expected: list[dict[str, torch.Tensor]],
                        tmp_path: Path) -> None:
    path = export_pt2(detector, tmp_path / "rfcn.pt2", example_size=(120, 90))
    module = load_pt2(path)
    assert any("rfcn" in str(node.target) for node in module.graph.nodes)  # our kernels
    for image, exp in zip(sample_images(), expected, strict=True):
        with torch.no_grad():
            boxes, labels, scores = module(image)
        assert_same_detections(dict(boxes=boxes, labels=labels, scores=scores), exp)


def test_onnx_detector_checks_inputs_and_providers(
    onnx_file: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from rfcn.export.onnx_runtime import OnnxDetector

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("CUDA provider present: the fallback is not exercised")
    with caplog.at_level(logging.WARNING, logger="rfcn.export.onnx_runtime"):
        detector = OnnxDetector(onnx_file, providers=["CUDAExecutionProvider"])
    assert detector.providers == ["CPUExecutionProvider"]
    assert "CUDAExecutionProvider" in caplog.text
    with pytest.raises(ValueError, match="Tensor\\[3, H, W\\]"):
        detector(torch.rand(1, 3, 32, 32))
    with pytest.raises(TypeError, match="float"):
        detector(torch.zeros(3, 32, 32, dtype=torch.uint8))
    with pytest.raises(ValueError, match="empty"):
        detector([])
