"""Opening an exported detector for inference: the one way tools/infer.py and the runtime
benchmarks run an ONNX file (onnxruntime, `rfcn.export.onnx_runtime.OnnxDetector`) or a .pt2
file (`rfcn.export.load_pt2`), behind the models' calling convention
``list[Tensor[3, H, W]] -> list[dict(boxes, labels, scores)]``, with the class names the file
carries (`rfcn.export.metadata`)."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from rfcn.export.metadata import METADATA_KEYS, exported_classes

if TYPE_CHECKING:
    from rfcn.export.onnx_runtime import OnnxDetector

EXPORTED_RUNTIMES = ("onnxruntime", "pt2")

Detect = Callable[[list[Tensor]], list[dict[str, Tensor]]]


@dataclass
class ExportedDetector:
    """An exported file ready to run: `detect(images)` and the classes it was trained on."""

    detect: Detect
    class_names: list[str]
    label_to_cat_id: dict[int, int]


def onnx_detector(path: str | os.PathLike[str], device: torch.device | None = None,
                  threads: int | None = None) -> OnnxDetector:
    """An onnxruntime session of `path`: on CUDA when `device` is a CUDA device (CPU where
    this onnxruntime has no CUDA), with `threads` intra-op threads (None: onnxruntime's
    default)."""
    from rfcn.export.onnx_runtime import OnnxDetector

    providers = ["CUDAExecutionProvider"] if device is not None and device.type == "cuda" else None
    return OnnxDetector(path, providers, threads=threads)


def pt2_detector(path: str | os.PathLike[str]) -> Detect:
    """The program of an `export_pt2` file, one image per call, as a detector."""
    from rfcn.export import load_pt2

    module = load_pt2(path)

    def detect(images: list[Tensor]) -> list[dict[str, Tensor]]:
        out = []
        for image in images:
            boxes, labels, scores = module(image)
            out.append({"boxes": boxes, "labels": labels, "scores": scores})
        return out

    return detect


def load_exported(path: str | os.PathLike[str], runtime: str,
                  device: torch.device | None = None) -> ExportedDetector:
    """The file `path` (written by tools/export.py) through `runtime` ("onnxruntime" for an
    ONNX file, "pt2" for a torch.export one), with its class names.

    Raises:
        FileNotFoundError: no file at `path`.
        ValueError: an unknown runtime, or a file without class names.
    """
    path = Path(path)
    if runtime not in EXPORTED_RUNTIMES:
        raise ValueError(f"runtime must be one of {EXPORTED_RUNTIMES}, got {runtime!r}")
    if not path.is_file():
        raise FileNotFoundError(f"exported model not found: {path}")
    if runtime == "onnxruntime":
        session = onnx_detector(path, device)
        names, ids = exported_classes(session.metadata, str(path))
        return ExportedDetector(session, names, ids)
    from rfcn.export.exporters import load_pt2_metadata

    names, ids = exported_classes(load_pt2_metadata(path, METADATA_KEYS), str(path))
    return ExportedDetector(pt2_detector(path), names, ids)
