"""Post-training static int8 quantisation of an ONNX detector (onnxruntime.quantization).

`quantize_onnx(onnx_path, out_path, calibration_images)` writes a QDQ model: the weights of
the convolutions and matrix products are int8 (one scale per output channel), their input
and output activations are 8-bit with ranges measured on the calibration images (MinMax),
and onnxruntime's CPU provider fuses each ``DequantizeLinear -> Conv -> QuantizeLinear`` into
an integer ``QLinearConv`` when it loads the file. Everything else stays float: resize and
normalisation, anchors and box decoding, NMS, the PS RoI pooling (``Gather`` / ``CumSum`` on
the float score maps) and the post-processing, so only the convolution arithmetic is
approximated; `scripts/runtime_ap.py` measures what that costs in AP.

Works on any ONNX file whose single input is one image ``float32 Tensor[3, H, W]`` in [0, 1]:
an `rfcn.export.export_onnx` file (any H, W) or torchvision's detectors traced by the
TorchScript exporter (the size they were traced at).

Preparation: onnxruntime recommends ``quant_pre_process`` first (ONNX shape inference and a
basic graph optimisation). Its symbolic shape inference cannot finish on this graph (sizes
computed from data: resize, NMS, top-k; it raises "Incomplete symbolic shape inference"), so
it runs with ``skip_symbolic_shape=True``. On the test detector the prepared and unprepared
files give the same detections; preparing also silences onnxruntime's warning.

Data types (onnxruntime's CPU guidance): int8 weights with uint8 activations on x86 CPUs (on a
2-core AMD EPYC with VNNI, R-FCN R-50 at 600x900 ran in 2.1 s with uint8 activations and 3.3 s
with int8 ones, 4.1 s in float); int8 activations on ARM.

Needs the ``export`` extra (onnx, onnxruntime); both are imported only when called.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from torch import Tensor

__all__ = ["DEFAULT_OP_TYPES", "ImageCalibrationReader", "quantize_onnx"]

# Conv and the matrix products (Gemm: torchvision's box head) hold nearly all the arithmetic.
DEFAULT_OP_TYPES = ("Conv", "MatMul", "Gemm")
ACTIVATION_TYPES = ("uint8", "int8")


class ImageCalibrationReader:
    """onnxruntime's ``CalibrationDataReader`` protocol over a list of images: ``get_next()``
    gives ``{input_name: float32 array[3, H, W]}`` per image, then None.

    (Duck-typed rather than subclassed so that importing this module needs no onnxruntime.)
    """

    def __init__(self, images: Sequence[Tensor], input_name: str) -> None:
        self.input_name = input_name
        self.arrays = [_as_array(i, image) for i, image in enumerate(images)]
        self.start, self.end = 0, len(self.arrays)
        self._next = 0

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self._next >= self.end:
            return None
        array = self.arrays[self._next]
        self._next += 1
        return {self.input_name: array}

    def __len__(self) -> int:
        return len(self.arrays)

    def set_range(self, start_index: int, end_index: int) -> None:
        """Restrict to images [start_index, end_index) (onnxruntime's strided calibration)."""
        self.start, self.end = start_index, min(end_index, len(self.arrays))
        self._next = self.start

    def rewind(self) -> None:
        self._next = self.start


def quantize_onnx(
    onnx_path: str | os.PathLike[str],
    out_path: str | os.PathLike[str],
    calibration_images: Sequence[Tensor],
    per_channel: bool = True,
    *,
    op_types: Sequence[str] = DEFAULT_OP_TYPES,
    activation_type: str = "uint8",
    preprocess: bool = True,
) -> Path:
    """Write an int8 (QDQ, static) copy of the ONNX detector `onnx_path` to `out_path`.

    Args:
        onnx_path: a float ONNX file with one image input ``float32 Tensor[3, H, W]``.
        out_path: the quantised file to write (its metadata_props are the input's).
        calibration_images: float Tensor[3, H, W] in [0, 1], images like the ones the model
            will see (a few training images; 16 is plenty for MinMax ranges). For a file
            with a fixed input size they must have that size.
        per_channel: one weight scale per output channel (per tensor otherwise).
        op_types: the ONNX operators to quantise; the others stay float.
        activation_type: "uint8" (x86) or "int8" (ARM); weights are always int8.
        preprocess: run ``quant_pre_process`` (shape inference, basic optimisation) first.

    Returns:
        `out_path`.
    """
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    if not calibration_images:
        raise ValueError("calibration_images is empty: static quantisation needs images to "
                         "measure the activation ranges")
    if activation_type not in ACTIVATION_TYPES:
        raise ValueError(f"activation_type must be one of {ACTIVATION_TYPES}, got "
                         f"{activation_type!r}")
    onnx_path, out_path = Path(onnx_path), Path(out_path)
    source = onnx.load(str(onnx_path), load_external_data=False)
    if len(source.graph.input) != 1:
        raise ValueError(f"{onnx_path} has {len(source.graph.input)} inputs; expected one image")
    reader = ImageCalibrationReader(calibration_images, source.graph.input[0].name)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="rfcn-quant-") as tmp:
        model_input = _prepared(onnx_path, Path(tmp)) if preprocess else onnx_path
        quantize_static(
            str(model_input), str(out_path), reader, quant_format=QuantFormat.QDQ,
            op_types_to_quantize=list(op_types), per_channel=per_channel,
            activation_type=QuantType.QUInt8 if activation_type == "uint8" else QuantType.QInt8,
            weight_type=QuantType.QInt8, calibrate_method=CalibrationMethod.MinMax)
    _copy_metadata(source, out_path)
    return out_path


def _prepared(onnx_path: Path, tmp: Path) -> Path:
    """``quant_pre_process`` without symbolic shape inference (see the module docstring)."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    prepared = tmp / "prepared.onnx"
    quant_pre_process(str(onnx_path), str(prepared), skip_symbolic_shape=True)
    return prepared


def _copy_metadata(source: Any, out_path: Path) -> None:
    """Give the quantised file the source's metadata_props (class names, model spec)."""
    import onnx

    wanted = {p.key: p.value for p in source.metadata_props}
    if not wanted:
        return
    model = onnx.load(str(out_path))
    have = {p.key: p.value for p in model.metadata_props}
    if have == wanted:
        return
    del model.metadata_props[:]
    for key, value in wanted.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(model, str(out_path))


def _as_array(index: int, image: Tensor) -> np.ndarray:
    if not isinstance(image, Tensor) or image.dim() != 3 or image.shape[0] != 3:
        raise ValueError(f"calibration_images[{index}] must be a Tensor[3, H, W], got "
                         f"{getattr(image, 'shape', type(image))}")
    if not image.is_floating_point():
        raise TypeError(f"calibration_images[{index}] must be a float tensor in [0, 1], got "
                        f"{image.dtype}")
    return image.detach().to("cpu").float().contiguous().numpy()
