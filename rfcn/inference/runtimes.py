"""Inference runtimes: one detector behind eager PyTorch, torch.compile, onnxruntime or int8.

`build_runtime(name, kind, model, ...)` puts one detector (kind "rfcn": an R-FCN; kind
"torchvision": a torchvision detection model) behind the models' calling convention, images
``list[Tensor[3, H, W]]`` -> ``list[dict(boxes, labels, scores)]``, through one runtime:

- eager: `rfcn.models.inference.inference_copy` (BatchNorm folded, channels-last), what
  tools/eval.py and tools/infer.py run.
- compile: ``torch.compile`` (inductor, CPU) of the inference copy. Scope "convs" (the
  default) compiles the convolutional parts, with weight freezing: R-FCN's trunk, RPN head and
  PS head; Faster R-CNN's backbone + FPN, RPN head, box head and predictor. Scope "full"
  compiles the whole forward (without freezing, which fails there), which dynamo cuts at every
  data-dependent op (nonzero, NMS, bincount, ``.item()``: 19 graph breaks on R-FCN), taking
  minutes to compile the pieces and recompiling them when a proposal or detection count
  changes.
- onnxruntime: R-FCN through `rfcn.export.export_onnx` (any H, W); torchvision through the
  TorchScript exporter (``torch.onnx.export(model, ([image],), dynamo=False,
  opset_version=17)``), which traces the resize as constants, so the file runs at the traced
  image size only. Both run with `OnnxDetector`, opened by
  `rfcn.inference.exported.onnx_detector` (as tools/infer.py opens an exported file),
  intra-op threads = torch's.
- int8: that ONNX file quantised by `rfcn.export.quantize_onnx` (static, QDQ, per-channel
  int8 weights, uint8 activations, MinMax ranges from the calibration images).

`build_all` builds several runtimes of several detectors and keeps going past the ones that
fail (their reasons are kept); `rfcn.inference.runtime_comparison` times them against each
other, scripts/runtime_ap.py scores them.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rfcn.inference.exported import Detect, onnx_detector
from rfcn.models.inference import inference_copy

RUNTIMES = ("eager", "compile", "onnxruntime", "int8")
KINDS = ("rfcn", "torchvision")
COMPILE_SCOPES = ("convs", "full")
COMPILE_MODES = ("default", "max-autotune-no-cudagraphs")
TORCHVISION_OPSET = 17


@dataclass
class Runtime:
    """One detector through one runtime: `detect(images)`, how long building it took
    (export, quantisation, compilation and its warm-up call), and how it was built."""

    name: str
    kind: str
    detect: Detect
    build_seconds: float
    how: str
    onnx_path: Path | None = None


# ---- runtimes ---------------------------------------------------------------------------------


def build_runtime(
    name: str, kind: str, model: nn.Module, *, image: Tensor, workdir: Path,
    threads: int, calibration: list[Tensor] | None = None, onnx_path: Path | None = None,
    compile_scope: str = "convs", compile_mode: str = "default",
) -> Runtime:
    """`model` (eval mode, not changed) through runtime `name`.

    Args:
        image: an input of the size that will be timed (compile warm-up, torchvision's trace).
        workdir: where the ONNX files go.
        threads: onnxruntime intra-op threads.
        calibration: int8 only: calibration images, Tensor[3, H, W] each.
        onnx_path: int8 only: an ONNX file of `model` made already (else exported here).
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    if name == "eager":
        started = time.perf_counter()
        fast = inference_copy(model)
        return Runtime(name, kind, no_grad_detector(fast), time.perf_counter() - started,
                       "inference_copy (BatchNorm folded, channels-last), eager PyTorch")
    if name == "compile":
        return compile_runtime(kind, model, image, compile_scope, compile_mode)
    if name == "onnxruntime":
        return onnx_runtime(kind, model, image, workdir / f"{kind}.onnx", threads)
    if name == "int8":
        if calibration is None:
            raise ValueError("int8 needs calibration images")
        return int8_runtime(kind, model, image, workdir, threads, calibration, onnx_path)
    raise ValueError(f"runtime must be one of {RUNTIMES}, got {name!r}")


def compile_runtime(kind: str, model: nn.Module, image: Tensor, scope: str, mode: str
                    ) -> Runtime:
    """torch.compile of the inference copy; the first (compiling) call is part of the build."""
    import torch._dynamo
    import torch._inductor.config

    if scope not in COMPILE_SCOPES:
        raise ValueError(f"compile scope must be one of {COMPILE_SCOPES}, got {scope!r}")
    # Freezing folds the weights into the graph as constants and lets inductor pre-pack them
    # for oneDNN: PyTorch's recommended setting for CPU inference. On the whole forward
    # (torch 2.14) it fails with "InductorError: RuntimeError: FakeTensorUpdater cannot
    # recompute metadata for tracked _inductor_lowering_function nodes", so not there.
    freezing = scope == "convs"
    torch._inductor.config.freezing = freezing
    started = time.perf_counter()
    fast = inference_copy(model)
    breaks_before = sum(torch._dynamo.utils.counters["graph_break"].values())
    if scope == "full":
        fast = torch.compile(fast, mode=mode)
        parts = "the whole forward"
    else:
        parts = ", ".join(_compile_convs(kind, fast, mode))
    detect = no_grad_detector(fast)
    detect([image])
    breaks = sum(torch._dynamo.utils.counters["graph_break"].values()) - breaks_before
    how = (f"torch.compile(mode={mode!r}, inductor{', freezing' if freezing else ''}) of "
           f"{parts} in the inference copy; {breaks} graph breaks in the first call")
    return Runtime("compile", kind, detect, time.perf_counter() - started, how)


def _compile_convs(kind: str, fast: nn.Module, mode: str) -> list[str]:
    """Replace the convolutional submodules of `fast` by compiled ones; their names."""
    if kind == "rfcn":
        owners = [(fast, "trunk"), (fast.rpn, "head"), (fast, "head")]
        names = ["trunk", "rpn.head", "head (PS score maps, pooling, vote)"]
    else:
        heads = fast.roi_heads
        owners = [(fast, "backbone"), (fast.rpn, "head"), (heads, "box_head"),
                  (heads, "box_predictor")]
        names = ["backbone (+FPN)", "rpn.head", "roi_heads.box_head", "roi_heads.box_predictor"]
    for owner, attr in owners:
        setattr(owner, attr, torch.compile(getattr(owner, attr), mode=mode))
    return names


def onnx_runtime(kind: str, model: nn.Module, image: Tensor, path: Path, threads: int
                 ) -> Runtime:
    """`model` exported to `path` (R-FCN: any size; torchvision: `image`'s size) and run by
    onnxruntime on the CPU with `threads` intra-op threads."""
    started = time.perf_counter()
    if kind == "rfcn":
        from rfcn.export import export_onnx

        export_onnx(model, path, example_size=tuple(image.shape[-2:]))
        how = "rfcn.export.export_onnx (torch.export + dynamo ONNX exporter, any H, W)"
    else:
        export_torchvision_onnx(model, image, path)
        how = (f"torch.onnx.export(model, ([image],), dynamo=False, opset_version="
               f"{TORCHVISION_OPSET}) (TorchScript trace: this image size only)")
    detector = onnx_detector(path, threads=threads)
    how += f"; onnxruntime {_ort_version()} CPU, intra-op threads {threads}"
    return Runtime("onnxruntime", kind, detector, time.perf_counter() - started, how, path)


def export_torchvision_onnx(model: nn.Module, image: Tensor, path: Path) -> Path:
    """torchvision's documented ONNX export of a detection model (TorchScript exporter)."""
    import warnings

    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # TracerWarnings of torchvision's tracing paths
        torch.onnx.export(model.eval(), ([image.cpu()],), str(path), dynamo=False,
                          opset_version=TORCHVISION_OPSET, input_names=["image"],
                          output_names=["boxes", "labels", "scores"])
    return path


def int8_runtime(
    kind: str, model: nn.Module, image: Tensor, workdir: Path, threads: int,
    calibration: list[Tensor], onnx_path: Path | None,
) -> Runtime:
    """The ONNX file of `model` (`onnx_path`, else exported into `workdir`) quantised to int8
    on `calibration` (Tensor[3, H, W] each) and run by onnxruntime on the CPU."""
    from rfcn.export import quantize_onnx

    started = time.perf_counter()
    exported = ""
    if onnx_path is None:
        onnx_path = onnx_runtime(kind, model, image, workdir / f"{kind}.onnx", threads).onnx_path
        exported = f"exported in {time.perf_counter() - started:.0f} s, "
    assert onnx_path is not None
    quantised = time.perf_counter()
    if kind == "torchvision":  # its file takes the traced size only
        calibration = [resize_to(c, tuple(image.shape[-2:])) for c in calibration]
    path = quantize_onnx(onnx_path, workdir / f"{kind}_int8.onnx", calibration)
    detector = onnx_detector(path, threads=threads)
    how = (f"quantize_onnx of the onnxruntime file ({exported}quantised in "
           f"{time.perf_counter() - quantised:.0f} s): static QDQ, per-channel int8 weights, "
           f"uint8 activations, Conv/MatMul/Gemm only, {len(calibration)} calibration images")
    return Runtime("int8", kind, detector, time.perf_counter() - started, how, path)


def error_text(e: BaseException) -> str:
    """The first line of an exception, short and safe inside a Markdown table cell."""
    lines = str(e).strip().splitlines() or [""]
    return f"{type(e).__name__}: {lines[0][:300]}".replace("|", "/")


def resize_to(image: Tensor, size: tuple[int, int]) -> Tensor:
    """Tensor[3, H, W] -> Tensor[3, h, w] (bilinear)."""
    if tuple(image.shape[-2:]) == tuple(size):
        return image
    return F.interpolate(image[None], size=size, mode="bilinear", align_corners=False)[0]


def no_grad_detector(model: nn.Module | Callable[..., Any]) -> Detect:
    """`model` as a detector that runs under ``torch.no_grad()``."""

    def detect(images: list[Tensor]) -> list[dict[str, Tensor]]:
        with torch.no_grad():
            return model(images)
    return detect


def _ort_version() -> str:
    import onnxruntime

    return onnxruntime.__version__


def build_all(
    runtimes: list[str], models: dict[str, nn.Module], image: Tensor, workdir: Path,
    threads: int, calibration: list[Tensor] | None, compile_scope: str, compile_mode: str,
) -> tuple[dict[tuple[str, str], Runtime], dict[tuple[str, str], str]]:
    """Every (runtime, kind) that builds, and the reason of each one that does not."""
    built: dict[tuple[str, str], Runtime] = {}
    failed: dict[tuple[str, str], str] = {}
    for name in runtimes:
        for kind, model in models.items():
            previous = built.get(("onnxruntime", kind))
            try:
                built[name, kind] = build_runtime(
                    name, kind, model, image=image, workdir=workdir, threads=threads,
                    calibration=calibration, compile_scope=compile_scope,
                    compile_mode=compile_mode,
                    onnx_path=previous.onnx_path if previous is not None else None)
            except Exception as e:  # report and go on: one broken path must not hide the rest
                failed[name, kind] = error_text(e)
    return built, failed
