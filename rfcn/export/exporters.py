"""Export the whole detector: ONNX (stock onnxruntime, no custom ops) and PyTorch .pt2.

Both files hold `DeployableRFCN` traced by ``torch.export`` with a dynamic image height and
width: one image ``float32 Tensor[3, H, W]`` in [0, 1] (the model's own calling convention,
channels first, RGB) in; ``boxes float32 Tensor[D, 4]`` (xyxy, input-image pixels),
``labels int64 Tensor[D]`` (1..C-1) and ``scores float32 Tensor[D]`` (decreasing) out. Resize,
normalisation, trunk, RPN with NMS, PS score maps, PS pooling, voting and post-processing
are all inside.

Exporter: ``torch.onnx.export(..., dynamo=True)`` on the ExportedProgram. The TorchScript
exporter (``dynamo=False``) traces Python ints as constants, so the resize size (a value
computed from H and W) and every shape after it would be frozen at the example's size;
torchvision works around that with tracing-only code paths, which this model does not have.
"""

from __future__ import annotations

import contextlib
import logging
import os
import warnings
from collections.abc import Iterator
from pathlib import Path

import torch
from torch import nn
from torch.export import Dim, ExportedProgram

from rfcn.export.detector import DeployableRFCN
from rfcn.models.inference import inference_copy
from rfcn.models.rfcn import RFCN

__all__ = ["DEFAULT_OPSET", "export_onnx", "export_program", "export_pt2", "load_pt2",
           "load_pt2_metadata"]

DEFAULT_OPSET = 18
# Image sides accepted by the exported programs (a side of 1 would be specialised by
# torch.export; the upper bound only bounds the symbolic shapes).
MIN_SIDE, MAX_SIDE = 2, 2**16
INPUT_NAMES, OUTPUT_NAMES = ["image"], ["boxes", "labels", "scores"]
# What the exporter and ONNX optimiser log at INFO (hundreds of lines per export: every
# deduplicated initializer, every rewrite) is theirs, not the user's: only WARNING and above.
_NOISY_LOGGERS = ("onnx_ir", "onnxscript", "torch.onnx", "torch.export", "torch._export",
                  "torch.fx.experimental.symbolic_shapes", "torch._dynamo")

logger = logging.getLogger(__name__)


@contextlib.contextmanager
def quiet_exporter() -> Iterator[None]:
    """The exporter's loggers at WARNING, and its Python warnings (deprecations inside torch
    and torchvision that users cannot act on) to this module's log at DEBUG."""
    saved = {name: logging.getLogger(name).level for name in _NOISY_LOGGERS}
    for name in _NOISY_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            yield
        for w in caught:
            logger.debug("exporter: %s: %s (%s:%d)", w.category.__name__, w.message,
                         w.filename, w.lineno)
    finally:
        for name, level in saved.items():
            logging.getLogger(name).setLevel(level)


def export_program(
    model: RFCN,
    *,
    ps_ops: str = "custom",
    example_size: tuple[int, int] = (480, 640),
    device: torch.device | str | None = None,
) -> ExportedProgram:
    """``torch.export`` of `DeployableRFCN` over an inference copy of `model` (eval mode,
    BatchNorm folded; `model` itself is not changed).

    The copy keeps contiguous (NCHW) weights: channels-last buys nothing in ONNX, and
    ``torch.export.save`` cannot check the storage of non-contiguous weights (it warns that
    they may not load right off the CPU).

    Args:
        model: the detector.
        ps_ops: "custom" (``torch.ops.rfcn.*``, Numba kernels) or "torch" (plain tensor ops).
        example_size: (h, w) of the example image; any size runs the result.
        device: where the program runs (default: the model's device).
    """
    device = torch.device(device) if device is not None else _device_of(model)
    fast = inference_copy(model, channels_last=False).to(device)
    module = DeployableRFCN(fast, ps_ops=ps_ops).eval()
    example = torch.rand((3, *example_size), generator=torch.Generator().manual_seed(0))
    height, width = Dim("height", min=MIN_SIDE, max=MAX_SIDE), Dim("width", min=MIN_SIDE,
                                                                      max=MAX_SIDE)
    with torch.no_grad(), quiet_exporter():
        return torch.export.export(module, (example.to(device),),
                                   dynamic_shapes={"image": {1: height, 2: width}},
                                   strict=False)


def export_onnx(
    model: RFCN,
    path: str | os.PathLike[str],
    *,
    opset: int = DEFAULT_OPSET,
    example_size: tuple[int, int] = (480, 640),
    optimize: bool = True,
    metadata: dict[str, str] | None = None,
) -> Path:
    """Write `model` as an ONNX file of standard operators (runs on a stock onnxruntime).

    Input ``image``: float32 Tensor[3, H, W] in [0, 1], any H, W >= 2. Outputs ``boxes``
    Tensor[D, 4], ``labels`` int64 Tensor[D], ``scores`` Tensor[D]; see the module docstring.
    PS pooling uses `rfcn.export.ps_ops_torch`; NMS is ONNX ``NonMaxSuppression``.

    Args:
        model: the detector (exported on the CPU; it is not changed).
        path: the .onnx file to write.
        opset: ONNX opset (>= 16 for ``RoiAlign`` half-pixel, used by adaptive align only).
        example_size: (h, w) of the example image used for tracing.
        optimize: run the ONNX optimizer (constant folding, fewer Cast nodes).
        metadata: strings stored in the model's metadata_props (class names, ...).
    """
    program = export_program(model, ps_ops="torch", example_size=example_size, device="cpu")
    with quiet_exporter():
        onnx_program = torch.onnx.export(
            program, dynamo=True, opset_version=opset, input_names=INPUT_NAMES,
            output_names=OUTPUT_NAMES, optimize=optimize, verbose=False)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx_program.save(str(path))
    if metadata:
        import onnx

        proto = onnx.load(str(path))
        for key, value in metadata.items():
            entry = proto.metadata_props.add()
            entry.key, entry.value = key, value
        onnx.save(proto, str(path))
    return path


def export_pt2(
    model: RFCN,
    path: str | os.PathLike[str],
    *,
    example_size: tuple[int, int] = (480, 640),
    ps_ops: str = "custom",
    metadata: dict[str, str] | None = None,
) -> Path:
    """Write `model` as a ``torch.export`` ExportedProgram (``torch.export.save``); `metadata`
    strings go in as extra files (`load_pt2_metadata` reads them).

    Load it with `load_pt2` (or ``import rfcn.ops`` then ``torch.export.load``): the PS ops
    stay the ``torch.ops.rfcn.*`` custom ops (Numba kernels) unless ``ps_ops="torch"``. The
    program runs on the device the model is on. Calling convention: ``program.module()(image)``
    -> ``(boxes, labels, scores)``, as `export_onnx`.
    """
    program = export_program(model, ps_ops=ps_ops, example_size=example_size)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.export.save(program, path, extra_files=dict(metadata or {}))
    return path


def load_pt2_metadata(path: str | os.PathLike[str], keys: list[str]) -> dict[str, str]:
    """The `metadata` strings an `export_pt2` file holds (missing keys: empty strings)."""
    import rfcn.ops  # noqa: F401

    extra = dict.fromkeys(keys, "")
    torch.export.load(Path(path), extra_files=extra)
    return extra


def load_pt2(path: str | os.PathLike[str]) -> nn.Module:
    """The module of an `export_pt2` file: ``module(image) -> (boxes, labels, scores)``."""
    import rfcn.ops  # noqa: F401  (registers torch.ops.rfcn.* before deserialising)

    return torch.export.load(Path(path)).module()


def _device_of(model: nn.Module) -> torch.device:
    param = next(model.parameters(), None)
    return param.device if param is not None else torch.device("cpu")
