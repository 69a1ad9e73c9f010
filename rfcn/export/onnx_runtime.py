"""`OnnxDetector`: run an `export_onnx` file with onnxruntime, like the PyTorch model.

Needs the ``export`` extra (``pip install rfcn[export]``): onnxruntime is imported here only.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor

__all__ = ["OnnxDetector"]

logger = logging.getLogger(__name__)

CPU = "CPUExecutionProvider"


class OnnxDetector:
    """Detections from an ONNX file written by `rfcn.export.export_onnx`.

    Args:
        path: the .onnx file.
        providers: onnxruntime execution providers in order of preference, e.g.
            ``["CUDAExecutionProvider", "CPUExecutionProvider"]``; default CPU only. Providers
            this onnxruntime build lacks are skipped (logged); CPU is always the last resort.
        threads: intra-op threads of the session (``SessionOptions.intra_op_num_threads``);
            None: onnxruntime's default (one per physical core).
    """

    def __init__(self, path: str | os.PathLike[str], providers: Sequence[str] | None = None,
                 threads: int | None = None) -> None:
        import onnxruntime as ort

        self.path = Path(path)
        available = set(ort.get_available_providers())
        wanted = list(providers) if providers else [CPU]
        missing = [p for p in wanted if p not in available]
        if missing:
            logger.warning("onnxruntime has no %s here (available: %s); not using them",
                           ", ".join(missing), ", ".join(sorted(available)))
        chosen = [p for p in wanted if p in available] or [CPU]
        options = ort.SessionOptions()
        if threads is not None:
            if threads < 1:
                raise ValueError(f"threads must be >= 1 or None, got {threads}")
            options.intra_op_num_threads = int(threads)
        self.session = ort.InferenceSession(str(self.path), options, providers=chosen)
        self.input_name = self.session.get_inputs()[0].name
        self.output_names = [o.name for o in self.session.get_outputs()]
        self.metadata: dict[str, str] = dict(
            self.session.get_modelmeta().custom_metadata_map or {})

    @property
    def providers(self) -> list[str]:
        """The providers the session runs on."""
        return list(self.session.get_providers())

    def __call__(self, images: Tensor | Sequence[Tensor]) -> list[dict[str, Tensor]]:
        """images: float Tensor[3, H, W] in [0, 1], or a list of them -> one dict per image:
        boxes Tensor[D, 4] (xyxy, input-image pixels), labels int64 Tensor[D], scores
        Tensor[D], on the image's device (computed where the session runs)."""
        batch = [images] if isinstance(images, Tensor) else list(images)
        if not batch:
            raise ValueError("images is empty")
        return [self._detect(i, image) for i, image in enumerate(batch)]

    def _detect(self, index: int, image: Tensor) -> dict[str, Tensor]:
        if not isinstance(image, Tensor):
            raise TypeError(f"images[{index}] must be a Tensor[3, H, W], got {type(image)}")
        if image.dim() != 3 or image.shape[0] != 3 or min(image.shape[1:]) < 2:
            raise ValueError(f"images[{index}] must be Tensor[3, H, W] with H, W >= 2, got "
                             f"shape {tuple(image.shape)}")
        if not image.is_floating_point():
            raise TypeError(f"images[{index}] must be a float tensor in [0, 1], got "
                            f"{image.dtype}")
        pixels = image.detach().to("cpu", torch.float32).contiguous().numpy()
        outputs = dict(zip(self.output_names,
                           self.session.run(self.output_names, {self.input_name: pixels}),
                           strict=True))
        return {key: torch.from_numpy(outputs[key]).to(image.device)
                for key in ("boxes", "labels", "scores")}

    def __repr__(self) -> str:
        return f"OnnxDetector({str(self.path)!r}, providers={self.providers})"
