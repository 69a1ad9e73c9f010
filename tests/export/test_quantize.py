"""`quantize_onnx`: an int8 copy of an exported detector runs on a stock onnxruntime with
integer convolutions and keeps the float model's confident detections."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import Tensor
from torchvision.ops import box_iou

from rfcn.export import export_onnx, quantize_onnx
from tests.export.conftest import sample_images, tiny_detector

ort = pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxscript")

METADATA = {"rfcn_class_names": json.dumps(["__background__", "a", "b", "c"])}
CONFIDENT = 0.5  # the tiny detector's top scores are ~0.8


def _calibration_images() -> list[Tensor]:
    gen = torch.Generator().manual_seed(7)
    return [torch.rand(3, h, w, generator=gen) for h, w in ((100, 130), (90, 120), (64, 64),
                                                            (120, 90))]


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(float file, int8 file) of the tiny pool detector."""
    root = tmp_path_factory.mktemp("quant")
    fp32 = export_onnx(tiny_detector("pool"), root / "fp32.onnx", example_size=(120, 90),
                       metadata=METADATA)
    int8 = root / "int8.onnx"
    assert quantize_onnx(fp32, int8, _calibration_images()) == int8
    return fp32, int8


def test_graph_is_quantised(files: tuple[Path, Path], tmp_path: Path) -> None:
    _, int8 = files
    model = onnx.load(str(int8))
    ops = {n.op_type for n in model.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    int8_weights = [t for t in model.graph.initializer if t.data_type == onnx.TensorProto.INT8
                    and len(t.dims) == 4]
    assert len(int8_weights) >= 10, "the convolution weights should be int8"
    # per-channel: a weight's scale has one value per output channel
    assert any(len(t.dims) == 1 and t.dims[0] > 1 for t in model.graph.initializer
               if t.name.endswith("_scale"))
    # the float parts stay float: PS pooling (CumSum) and NMS are not quantised
    assert {"CumSum", "NonMaxSuppression"} <= ops
    assert {p.key: p.value for p in model.metadata_props} == METADATA
    # onnxruntime fuses the QDQ pairs into integer convolutions when it loads the file
    options = ort.SessionOptions()
    options.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    ort.InferenceSession(str(int8), options, providers=["CPUExecutionProvider"])
    fused = {n.op_type for n in onnx.load(str(tmp_path / "optimized.onnx")).graph.node}
    assert "QLinearConv" in fused


def test_int8_keeps_the_confident_detections(files: tuple[Path, Path]) -> None:
    from rfcn.export.onnx_runtime import OnnxDetector

    fp32, int8 = (OnnxDetector(p, threads=1) for p in files)
    images = sample_images()[:3]
    changed = False
    for i, (ref, got) in enumerate(zip(fp32(images), int8(images), strict=True)):
        assert got["boxes"].dtype == torch.float32 and got["boxes"].shape[1:] == (4,)
        assert got["labels"].dtype == torch.int64 and got["scores"].dtype == torch.float32
        assert len(got["boxes"]) == len(got["labels"]) == len(got["scores"]) > 0
        assert bool((got["scores"][:-1] >= got["scores"][1:]).all())
        top = int(ref["scores"].argmax())
        assert float(ref["scores"][top]) > CONFIDENT, f"image {i}: no confident detection"
        iou = box_iou(ref["boxes"][top : top + 1], got["boxes"])[0]
        same = (got["labels"] == ref["labels"][top]) & (iou > 0.5)
        close = (got["scores"] - ref["scores"][top]).abs() < 0.05
        assert bool((same & close).any()), (
            f"image {i}: the float top detection (label {int(ref['labels'][top])}, score "
            f"{float(ref['scores'][top]):.3f}) has no int8 match (best IoU {float(iou.max()):.2f})")
        changed |= len(got["scores"]) != len(ref["scores"]) or not torch.equal(
            got["scores"], ref["scores"])
    assert changed, "int8 detections equal the float ones exactly: nothing was quantised"


def test_bad_calibration_images(files: tuple[Path, Path], tmp_path: Path) -> None:
    fp32, _ = files
    with pytest.raises(ValueError, match="empty"):
        quantize_onnx(fp32, tmp_path / "x.onnx", [])
    with pytest.raises(ValueError, match=r"calibration_images\[1\]"):
        quantize_onnx(fp32, tmp_path / "x.onnx", [torch.rand(3, 8, 8), torch.rand(8, 8)])
    with pytest.raises(TypeError, match="float"):
        quantize_onnx(fp32, tmp_path / "x.onnx", [torch.zeros(3, 8, 8, dtype=torch.uint8)])
    with pytest.raises(ValueError, match="activation_type"):
        quantize_onnx(fp32, tmp_path / "x.onnx", [torch.rand(3, 8, 8)], activation_type="fp8")
