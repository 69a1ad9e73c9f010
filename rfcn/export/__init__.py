"""Deployment exports of the R-FCN detector.

- `export_onnx(model, path)`: an ONNX file of standard operators; run it with
  `rfcn.export.onnx_runtime.OnnxDetector` (or any onnxruntime session).
- `export_pt2(model, path)`: a ``torch.export`` ExportedProgram; `load_pt2(path)` runs it.
- `quantize_onnx(onnx_path, out_path, calibration_images)`: an int8 (static, QDQ) copy of an
  ONNX file, calibrated on a few images; runs with `OnnxDetector` like the float file.
- `DeployableRFCN`: the one-image graph both files hold; `rfcn.export.ps_ops_torch`: the PS
  RoI ops in plain tensor ops (standard ONNX once exported).

Both take one ``float32 Tensor[3, H, W]`` in [0, 1] (any H, W) and return
``(boxes Tensor[D, 4], labels int64 Tensor[D], scores Tensor[D])``. The ONNX side needs the
``export`` extra (onnx, onnxscript, onnxruntime).
"""

from rfcn.export.detector import DeployableRFCN
from rfcn.export.exporters import export_onnx, export_program, export_pt2, load_pt2
from rfcn.export.quantize import quantize_onnx

__all__ = ["DeployableRFCN", "export_onnx", "export_program", "export_pt2", "load_pt2",
           "quantize_onnx"]
