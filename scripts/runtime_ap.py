"""COCO AP of one checkpoint through each CPU inference runtime: what a faster path costs.

    python scripts/runtime_ap.py --checkpoint outputs/run/checkpoints/last.pt
    python scripts/runtime_ap.py --checkpoint PATH --runtime eager int8 --max-images 100
    python scripts/runtime_ap.py --checkpoint PATH --ann-file val.json --img-dir val/
    python scripts/runtime_ap.py --quick        # smoke: tiny random model, tiny synthetic set

The checkpoint's model runs through each --runtime (default: eager, onnxruntime, int8,
compile; built by rfcn.inference.runtimes) on the validation split of its own dataset (the
synthetic or COCO-json config stored in the checkpoint; --dataset-root moves the synthetic
cache, --ann-file/--img-dir evaluate another COCO-json split), scored by the project's
evaluator (CocoEvaluator through rfcn.evaluation.evaluator.inference_on_dataset, which takes any
callable `model(images) -> list[dict]` behind an nn.Module shell: it calls model.eval() and
restores model.train(...)). The table: AP, AP50, their change against eager, and the median
model time per image (image decoding excluded; the first call of each runtime, which
compiles, is made before timing).

int8 is calibrated on the first --calibration-images (default 16) training images of the same
dataset at their own size (the file resizes like the model); without a training split (an
--ann-file given) on the evaluation images, said in the output. The checkpoint's post-
processing is kept; soft-NMS (no graph form) is replaced by NMS for every runtime alike.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numba
import torch
from torch import Tensor, nn

from rfcn.data import CocoDetection
from rfcn.data.image_io import to_tensor
from rfcn.evaluation.coco import CocoEvaluator
from rfcn.evaluation.evaluator import inference_on_dataset
from rfcn.inference.bench_report import table
from rfcn.inference.exported import Detect
from rfcn.inference.runtimes import (
    COMPILE_MODES,
    COMPILE_SCOPES,
    RUNTIMES,
    Runtime,
    build_all,
    error_text,
)

DEFAULT_RUNTIMES = ("eager", "onnxruntime", "int8", "compile")


class TimedDetector(nn.Module):
    """A runtime's `detect` as the nn.Module that inference_on_dataset expects; records the
    wall time of every call."""

    def __init__(self, detect: Detect) -> None:
        super().__init__()
        self.detect = detect
        self.seconds: list[float] = []

    def forward(self, images: list[Tensor]) -> list[dict[str, Tensor]]:
        started = time.perf_counter()
        out = self.detect(images)
        self.seconds.append((time.perf_counter() - started) / max(len(images), 1))
        return out


def batches(dataset: Any, count: int) -> Iterator[tuple[list[Tensor], list[dict[str, Any]]]]:
    """The first `count` images of `dataset`, one per batch, in original pixels."""
    for i in range(count):
        yield [to_tensor(dataset.load_image(i))], [dataset.get_annotation(i)]


def evaluate(detect: Detect, dataset: Any, count: int) -> tuple[dict[str, Any], list[float]]:
    """COCO metrics of `detect` on the first `count` images, and its seconds per image."""
    ids = [int(dataset.get_annotation(i)["image_id"]) for i in range(count)]
    evaluator = CocoEvaluator(dataset.coco, dataset.label_to_cat_id, dataset.class_names, ids)
    timed = TimedDetector(detect)
    metrics = inference_on_dataset(timed, batches(dataset, count), evaluator,
                                   torch.device("cpu"))
    return metrics, timed.seconds


# ---- model and data ---------------------------------------------------------------------------


def checkpoint_model_and_data(args: argparse.Namespace) -> tuple[nn.Module, Any, Any, str]:
    """(model, evaluation split, calibration split, a note on the data) of --checkpoint."""
    from rfcn import assembly
    from rfcn import config as rc
    from rfcn.checkpoint import check_classes, load_checkpoint

    source = os.path.expanduser(args.checkpoint)
    ckpt = load_checkpoint(source)
    spec = assembly.checkpoint_spec(ckpt, source)
    post = {"box_nms": "nms"} if spec.post.box_nms != "nms" else None
    if post:
        print(f"box_nms={spec.post.box_nms!r} has no graph form: every runtime uses nms.\n")
    model = assembly.restore_model(ckpt, source, post).eval()
    if args.ann_file:
        val = CocoDetection(os.path.expanduser(args.img_dir), os.path.expanduser(args.ann_file))
        train, note = val, "calibrated on evaluation images (no training split given)"
    else:
        cfg = rc.from_yaml(ckpt["config"]).dataset
        if cfg.name not in ("synthetic", "coco_json", "coco"):
            raise SystemExit(f"dataset {cfg.name!r}: this script scores COCO AP; give a "
                             "COCO-json split with --ann-file/--img-dir")
        if args.dataset_root:
            cfg.root = args.dataset_root
        train, val = assembly.build_datasets(rc.validate_dataset_config(cfg))
        note = f"dataset {cfg.name}, calibrated on its training split"
    check_classes(ckpt["class_names"], val.class_names, f"evaluating {source}")
    return model, val, train, note


def quick_model_and_data(root: Path) -> tuple[nn.Module, Any, Any, str]:
    """A tiny random R-18 R-FCN and a tiny synthetic dataset (nothing trained: AP ~ 0)."""
    from rfcn.data.synthetic import ensure_synthetic_dataset
    from rfcn.models import rfcn_resnet18

    torch.manual_seed(0)
    logging.getLogger("rfcn.models.backbone").setLevel(logging.ERROR)
    model = rfcn_resnet18(5, min_size=96, max_size=160, k=3, head_dim=32, rpn_dim=32,
                          anchor_sizes=(32, 64), rpn_pre_nms_top_n_test=200,
                          rpn_post_nms_top_n_test=40, norm="bn").eval()
    splits = ensure_synthetic_dataset(root, num_train=4, num_val=4, image_size=96)
    train, val = CocoDetection(*splits["train"]), CocoDetection(*splits["val"])
    return model, val, train, "--quick: random rfcn_resnet18, 4 synthetic val images"


# ---- report -----------------------------------------------------------------------------------


def result_rows(results: dict[str, dict[str, Any]]) -> list[list[str]]:
    eager = results.get("eager", {}).get("metrics")
    rows = []
    for name, r in results.items():
        if "error" in r:
            rows.append([name, "–", "–", "–", "–", "–", f"not run: {r['error']}"])
            continue
        m = r["metrics"]
        delta = "–" if eager is None else f"{100 * (m['AP'] - eager['AP']):+.2f}"
        delta50 = "–" if eager is None else f"{100 * (m['AP50'] - eager['AP50']):+.2f}"
        rows.append([name, f"{100 * m['AP']:.2f}", f"{100 * m['AP50']:.2f}", delta, delta50,
                     f"{1000 * r['median_s']:.0f}", f"built in {r['build_s']:.0f} s"])
    return rows


def print_report(results: dict[str, dict[str, Any]], built: dict[str, Runtime]) -> None:
    header = ["runtime", "AP", "AP50", "ΔAP vs eager", "ΔAP50 vs eager", "ms / image (median)",
              "notes"]
    print(table(header, result_rows(results)))
    print("\nAP in %, Δ in AP points.\n")
    for name, rt in built.items():
        print(f"- {name}: {rt.how}")
    print()


# ---- main -------------------------------------------------------------------------------------


def run_runtimes(args: argparse.Namespace, model: nn.Module, val: Any, calibration: list[Tensor],
                 workdir: Path) -> tuple[dict[str, dict[str, Any]], dict[str, Runtime]]:
    count = len(val) if args.max_images is None else min(args.max_images, len(val))
    first = to_tensor(val.load_image(0))
    built, failed = build_all(args.runtime, {"rfcn": model}, first, workdir,
                              torch.get_num_threads(), calibration, args.compile_scope,
                              args.compile_mode)
    results: dict[str, dict[str, Any]] = {}
    scored: dict[str, Runtime] = {}
    for name in args.runtime:
        if (name, "rfcn") in failed:
            results[name] = {"error": failed[name, "rfcn"]}
            continue
        rt = built[name, "rfcn"]
        try:
            rt.detect([first])  # warm-up (compile: the compiling call when not made yet)
            metrics, seconds = evaluate(rt.detect, val, count)
        except Exception as e:  # report and go on with the other runtimes
            results[name] = {"error": error_text(e)}
            continue
        scored[name] = rt
        results[name] = {"metrics": {k: metrics[k] for k in ("AP", "AP50", "AP75")},
                         "median_s": statistics.median(seconds), "build_s": rt.build_seconds,
                         "images": count}
    return results, scored


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    numba.get_num_threads()  # start numba's OpenMP layer first: it resets torch's thread count
    if args.threads:
        torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.WARNING)
    print(f"# AP per inference runtime\n\n`{' '.join(['python', *sys.argv])}`\n")
    with tempfile.TemporaryDirectory(prefix="runtime-ap-") as tmp:
        workdir = Path(tmp)
        if args.quick:
            model, val, train, note = quick_model_and_data(workdir / "synthetic")
        else:
            model, val, train, note = checkpoint_model_and_data(args)
        calibration = [to_tensor(train.load_image(i))
                       for i in range(min(args.calibration_images, len(train)))]
        print(f"{note}; {len(calibration)} calibration images; threads: "
              f"{torch.get_num_threads()} (torch and onnxruntime).\n")
        results, built = run_runtimes(args, model, val, calibration, workdir)
    print_report(results, built)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0 if "eager" not in results or "error" not in results["eager"] else 1


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--checkpoint", help="an rfcn training checkpoint (last.pt)")
    p.add_argument("--quick", action="store_true",
                   help="smoke test: tiny random model and synthetic set, no checkpoint")
    p.add_argument("--runtime", action="extend", nargs="+", choices=RUNTIMES, default=None,
                   help=f"runtimes (default {' '.join(DEFAULT_RUNTIMES)}); eager is the reference")
    p.add_argument("--dataset-root", help="root of the synthetic dataset cache (default: the "
                   "checkpoint config's)")
    p.add_argument("--ann-file", help="COCO-json annotations of the split to evaluate")
    p.add_argument("--img-dir", help="its images")
    p.add_argument("--max-images", type=int, default=None, help="first N images only")
    p.add_argument("--calibration-images", type=int, default=16)
    p.add_argument("--threads", type=int, default=None, help="torch and onnxruntime threads")
    p.add_argument("--compile-scope", choices=COMPILE_SCOPES, default="convs")
    p.add_argument("--compile-mode", choices=COMPILE_MODES, default="default")
    p.add_argument("--json", help="also write the results here")
    args = p.parse_args(argv)
    args.runtime = list(dict.fromkeys(args.runtime or DEFAULT_RUNTIMES))
    if not args.quick and not args.checkpoint:
        p.error("give --checkpoint PATH (or --quick)")
    if bool(args.ann_file) != bool(args.img_dir):
        p.error("--ann-file and --img-dir go together")
    if args.quick and args.threads is None:
        args.threads = 1
    if args.calibration_images < 1 or (args.max_images is not None and args.max_images < 1):
        p.error("--calibration-images and --max-images must be >= 1")
    return args


if __name__ == "__main__":
    sys.exit(main())
