"""Inference runtimes for the detector benchmarks, and the interleaved timing they share.

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
  image size only. Both run with `OnnxDetector`, intra-op threads = torch's.
- int8: that ONNX file quantised by `rfcn.export.quantize_onnx` (static, QDQ, per-channel
  int8 weights, uint8 activations, MinMax ranges from the calibration images).

Import as a sibling module of the scripts (``python scripts/bench_detector.py`` puts scripts/
on the path).
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from bench_timing import fmt_s, interleaved, table
from torch import Tensor, nn

from rfcn.models.inference import inference_copy

RUNTIMES = ("eager", "compile", "onnxruntime", "int8")
KINDS = ("rfcn", "torchvision")
COMPILE_SCOPES = ("convs", "full")
COMPILE_MODES = ("default", "max-autotune-no-cudagraphs")
TORCHVISION_OPSET = 17

Detect = Callable[[list[Tensor]], list[dict[str, Tensor]]]


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
        return Runtime(name, kind, _no_grad(fast), time.perf_counter() - started,
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
    detect = _no_grad(fast)
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
    from rfcn.export.onnx_runtime import OnnxDetector

    started = time.perf_counter()
    if kind == "rfcn":
        from rfcn.export import export_onnx

        export_onnx(model, path, example_size=tuple(image.shape[-2:]))
        how = "rfcn.export.export_onnx (torch.export + dynamo ONNX exporter, any H, W)"
    else:
        export_torchvision_onnx(model, image, path)
        how = (f"torch.onnx.export(model, ([image],), dynamo=False, opset_version="
               f"{TORCHVISION_OPSET}) (TorchScript trace: this image size only)")
    detector = OnnxDetector(path, threads=threads)
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
    from rfcn.export import quantize_onnx
    from rfcn.export.onnx_runtime import OnnxDetector

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
    detector = OnnxDetector(path, threads=threads)
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


def _no_grad(model: nn.Module | Callable[..., Any]) -> Detect:
    def detect(images: list[Tensor]) -> list[dict[str, Tensor]]:
        with torch.no_grad():
            return model(images)
    return detect


def _ort_version() -> str:
    import onnxruntime

    return onnxruntime.__version__



# ---- the runtime comparison -------------------------------------------------------------------

LABELS = {"rfcn": "rfcn_resnet50", "torchvision": "fasterrcnn_resnet50_fpn"}
# configs/dataset/synthetic.yaml's dataset and cache root: a default training run's cache
SYNTHETIC_ROOT = os.path.join(os.environ.get("RFCN_CACHE_DIR", "~/.cache/rfcn"), "synthetic")
SYNTHETIC_DEFAULTS: dict[str, Any] = {"num_train": 2000, "num_val": 200, "image_size": 256,
                                      "seed": 0}


def synthetic_calibration(count: int, size: tuple[int, int], root: Path,
                          **dataset_kwargs: Any) -> list[Tensor]:
    """The first `count` training images of the built-in synthetic dataset (generated into
    `root` on first use; `dataset_kwargs` go to ensure_synthetic_dataset), resized to `size`."""
    from rfcn.data import CocoDetection
    from rfcn.data.image_io import to_tensor
    from rfcn.data.synthetic import ensure_synthetic_dataset

    img_dir, ann_file = ensure_synthetic_dataset(root, **dataset_kwargs)["train"]
    dataset = CocoDetection(img_dir, ann_file)
    return [resize_to(to_tensor(dataset.load_image(i)), size)
            for i in range(min(count, len(dataset)))]


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


def runtime_rows(
    built: dict[tuple[str, str], Runtime], failed: dict[tuple[str, str], str],
    times: dict[str, list[float]], detections: dict[str, int], runtimes: list[str],
) -> list[list[str]]:
    """Table rows: torchvision as shipped, then R-FCN and torchvision per runtime."""
    med = {k: statistics.median(v) for k, v in times.items()}
    shipped = med["shipped"]

    def row(name: str, kind: str, key: str, built_in: str, lead: str) -> list[str]:
        t = med[key]
        return [name, LABELS[kind], built_in, str(detections.get(key, "?")), f"{t * 1000:.0f}",
                " ".join(fmt_s(x) for x in times[key]), f"{shipped / t:.2f}×", lead]

    rows = [row("eager, as shipped", "torchvision", "shipped", "–", "")]
    for name in runtimes:
        tv_key = f"{name}/torchvision"
        for kind in KINDS:
            key = f"{name}/{kind}"
            if (name, kind) not in built:
                reason = failed.get((name, kind), "not built")
                rows.append([name, LABELS[kind], "–", "–", "–", "–", "–", f"not run: {reason}"])
                continue
            lead = "–"
            if kind == "rfcn":
                lead = (f"{med[tv_key] / med[key]:.2f}×" if tv_key in med
                        else "n/a (no torchvision row)")
            rows.append(row(name, kind, key, fmt_s(built[name, kind].build_seconds), lead))
    return rows


def runtime_section(
    args: argparse.Namespace, rfcn: nn.Module, torchvision_model: nn.Module, image: Tensor,
    device: torch.device,
) -> None:
    """Build R-FCN and torchvision's detector through each of ``args.runtime``, time them
    interleaved with torchvision's model as shipped, print the table and how each was built."""
    print("## Inference runtimes (CPU): R-FCN R-50 vs torchvision Faster R-CNN R-50-FPN\n")
    if device.type != "cpu":
        print("Skipped: the runtimes compared here run on the CPU (use --device cpu).\n")
        return
    threads = torch.get_num_threads()
    size = (int(image.shape[-2]), int(image.shape[-1]))
    with tempfile.TemporaryDirectory(prefix="bench-runtimes-") as tmp:
        calibration = None
        if "int8" in args.runtime:
            calibration = _bench_calibration(args, size, Path(tmp))
        built, failed = build_all(
            args.runtime, {"rfcn": rfcn, "torchvision": torchvision_model}, image,
            Path(tmp), threads, calibration, args.compile_scope, args.compile_mode)
        detections: dict[str, int] = {}

        def timed(key: str, detect: Detect) -> Callable[[], None]:
            def fn() -> None:
                detections[key] = int(detect([image])[0]["boxes"].shape[0])
            return fn

        fns = {"shipped": timed("shipped", _no_grad(torchvision_model))}
        fns.update({f"{name}/{kind}": timed(f"{name}/{kind}", rt.detect)
                    for (name, kind), rt in built.items()})
        times = interleaved(fns, args.runs, args.warmup, device)
    print(table(["runtime", "model", "built in", "detections", "ms / image (median)", "runs",
                 "speed-up vs torchvision as shipped", "R-FCN vs torchvision, same runtime"],
                runtime_rows(built, failed, times, detections, args.runtime)))
    print(f"\nIntra-op threads: {threads}, for torch and onnxruntime alike. Build times (export, "
          "quantisation, compilation with its first call) are not in the medians.\n")
    for (name, kind), rt in built.items():
        print(f"- {name}, {LABELS[kind]}: {rt.how}")
    for (name, kind), reason in failed.items():
        print(f"- {name}, {LABELS[kind]}: NOT RUN, {reason}")
    if "int8" in args.runtime:
        print("\nint8 changes the detections; its AP against eager on a trained checkpoint: "
              "scripts/runtime_ap.py.")
    print()


def _bench_calibration(args: argparse.Namespace, size: tuple[int, int], tmp: Path
                       ) -> list[Tensor]:
    """Calibration images for the int8 rows: training images of the synthetic dataset (the
    default training run's cache; --quick: a tiny one generated in `tmp`), resized to `size`."""
    if args.quick:
        images = synthetic_calibration(args.calibration_images, size, tmp / "synthetic",
                                       num_train=args.calibration_images, num_val=1,
                                       image_size=64)
    else:
        images = synthetic_calibration(args.calibration_images, size,
                                       Path(args.calibration_root).expanduser(),
                                       **SYNTHETIC_DEFAULTS)
    print(f"int8 calibration: {len(images)} training images of the synthetic dataset, resized "
          f"to {size[0]}×{size[1]}.\n")
    return images
