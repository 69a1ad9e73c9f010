"""Detector benchmark: R-FCN vs torchvision's Faster R-CNN, the proposal cost curve, a per-stage
breakdown and the training step, all measured in one process on the same input.

    python scripts/bench_detector.py                 # CPU, defaults (< 5 min on 2 idle cores)
    python scripts/bench_detector.py --device cuda --runs 10 --warmup 3
    python scripts/bench_detector.py --quick         # small smoke run
    python scripts/bench_detector.py --runtime eager compile onnxruntime int8   # CPU runtimes

Setup (printed with the results):
- Random weights (no download), one 600×900 image (seeded uniform noise), min_size 600,
  max_size 1000, 81 classes, torch.no_grad() for inference; median of --runs timed runs after
  --warmup untimed ones. Runs of the models being compared are interleaved (A B A B ...) so a
  change of machine load hits both alike: on a shared machine trust the ratios, not the
  absolute times.
- R-FCN: rfcn.models.rfcn_resnet50 as it is used for inference: the trunk normalised the way an
  ImageNet-initialised model is (frozen BatchNorm; random statistics here), conv5 dilated, k=7,
  class-agnostic boxes, pre-NMS top 6000, run through rfcn.models.inference.inference_copy
  (BatchNorm folded into the convolutions, channels-last), which is what tools/eval.py,
  tools/infer.py and the training's evaluation run.
  Faster R-CNN: torchvision.models.detection.fasterrcnn_resnet50_fpn(weights=None,
  weights_backbone=None) (BatchNorm in eval mode), rpn_post_nms_top_n_test=300, as torchvision
  ships it. For transparency a third row runs the same Faster R-CNN through inference_copy:
  the folding and layout change help it too, so that row shows how much of R-FCN's lead is
  the architecture and how much the inference path.
- box_score_thresh=0 for both models: with random weights the class scores are near uniform
  (R-FCN ~1/81, below the usual 0.05; torchvision's box predictor gives some classes ~0.99), so
  a threshold makes post-processing trivially cheap for one model and not the other. With 0
  both feed every (RoI, class) candidate (300 × 80) to per-class NMS and keep the top 100: the
  most post-processing either model can do, and the same amount for both.
- The proposal counts the RPNs actually emit are measured (hook on the RPN) and printed.
- Per-stage times come from wrappers around the submodules' forward methods (no change to
  the outputs); "other" is the total minus the named stages.
- Training: one image with 5 random boxes, forward + backward + SGD step (lr 1e-5), each
  builder's random-init defaults (R-FCN: GroupNorm, OHEM over 300 proposals; torchvision:
  BatchNorm, 2000 proposals, 512 sampled RoIs).
- Runtimes (--runtime, CPU): "eager" is the sections above (and the training step). Any other
  runtime adds a table in which R-FCN (300 proposals) and torchvision's Faster R-CNN run through
  each requested runtime (eager, compile, onnxruntime, int8; see rfcn/inference/runtimes.py for
  how each is built), interleaved with torchvision's model as shipped: per row the median time,
  the speed-up over torchvision as shipped and, for R-FCN, the ratio to torchvision through the
  same runtime (the structural lead). Export, quantisation and compilation (with its first call)
  are timed once, printed, and kept out of the medians; onnxruntime gets torch's intra-op thread
  count. int8 is calibrated on training images of the synthetic dataset (--calibration-images,
  default 16) resized to the input size; it changes the detections, scripts/runtime_ap.py
  measures by how much.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numba
import torch
from torch import Tensor, nn

from rfcn.inference.bench_models import (
    NUM_CLASSES,
    build_rfcn,
    build_rfcn_for_training,
    build_rfcn_model,
    build_torchvision,
    random_targets,
)
from rfcn.inference.bench_report import environment, fmt_s, stage_table, table
from rfcn.inference.runtime_comparison import (
    SYNTHETIC_DEFAULTS,
    SYNTHETIC_ROOT,
    compare_runtimes,
    runtime_report,
    synthetic_calibration,
)
from rfcn.inference.runtimes import COMPILE_MODES, COMPILE_SCOPES, RUNTIMES
from rfcn.inference.timing import (
    ProposalCounter,
    StageTimer,
    instrument_rfcn,
    instrument_torchvision,
    interleaved,
)
from rfcn.models.inference import inference_copy

PROPOSAL_LADDER = (100, 300, 1000, 2000)
COMPARE_PROPOSALS = 300
SPEEDUP_GOAL = 2.0
CURVE_GOAL = 1.10


@contextlib.contextmanager
def train_mode(model: nn.Module) -> Iterator[None]:
    model.train()
    try:
        yield
    finally:
        model.eval()


# ---- sections ---------------------------------------------------------------------------------


def run(args: argparse.Namespace) -> int:
    device = torch.device(args.device)
    # Numba's OpenMP threading layer resets the process's OpenMP thread count (torch's
    # intra-op threads) when it starts, at the first numba.get_num_threads() or parallel
    # kernel: start it before choosing torch's threads, or the choice is silently undone.
    numba.get_num_threads()
    if args.quick:  # tiny ops: a second thread only adds synchronisation on a busy machine
        torch.set_num_threads(1)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("--device cuda requested but CUDA is not available", file=sys.stderr)
        return 2
    size = (args.height, args.width)
    torch.manual_seed(0)
    image = torch.rand(3, *size).to(device)
    started = time.perf_counter()
    print(f"# Detector benchmark\n\n`{' '.join(['python', *sys.argv])}`\n")
    print(f"{environment(device)}\n")
    print(f"Input 1 × 3 × {size[0]} × {size[1]}, {NUM_CLASSES} classes, random weights, "
          f"box_score_thresh={args.score_thresh:g} for both models; median of {args.runs} "
          f"runs after {args.warmup} warm-up runs; runtimes: {', '.join(args.runtime)}.\n")
    eager = "eager" in args.runtime
    if eager:
        eager_sections(args, size, image, device)
    if any(r != "eager" for r in args.runtime):
        compare_n = COMPARE_PROPOSALS if COMPARE_PROPOSALS in args.proposals else args.proposals[0]
        runtime_section(args, build_rfcn_model(size, compare_n, device, args.score_thresh),
                        build_torchvision(size, COMPARE_PROPOSALS, device, args.score_thresh),
                        image, device)
    if eager and not args.no_train:
        tv = (None if args.quick
              else build_torchvision(size, COMPARE_PROPOSALS, device, args.score_thresh))
        train_section(args, build_rfcn_for_training(size, device), tv, image, device)
    print(f"Benchmark wall time {time.perf_counter() - started:.0f} s.")
    return 0


def eager_sections(
    args: argparse.Namespace, size: tuple[int, int], image: Tensor, device: torch.device
) -> None:
    """R-FCN vs Faster R-CNN, the cost curve and the per-stage breakdown: eager PyTorch, all
    interleaved in one loop."""
    ladder = args.proposals
    compare_n = COMPARE_PROPOSALS if COMPARE_PROPOSALS in ladder else ladder[0]
    rfcns = {n: build_rfcn(size, n, device, args.score_thresh) for n in ladder}
    counters = {n: ProposalCounter(m.rpn) for n, m in rfcns.items()}
    tv = build_torchvision(size, COMPARE_PROPOSALS, device, args.score_thresh)
    tv_fast = inference_copy(tv)
    tv_counter = ProposalCounter(tv.rpn)

    def key(n: int) -> str:
        return "rfcn" if n == compare_n else f"rfcn{n}"

    timers = {key(n): StageTimer(device) for n in ladder}
    timers["tv"] = StageTimer(device)
    timers["tv_fast"] = StageTimer(device)
    for n, m in rfcns.items():
        instrument_rfcn(m, timers[key(n)])
    instrument_torchvision(tv, timers["tv"])
    instrument_torchvision(tv_fast, timers["tv_fast"])
    detections: dict[str, int] = {}

    def infer(name: str, model: nn.Module) -> Callable[[], None]:
        def fn() -> None:
            with torch.no_grad():
                out = model([image])
            detections[name] = int(out[0]["boxes"].shape[0])
        return fn

    fns: dict[str, Callable[[], None]] = {"tv": infer("tv", tv),
                                          "tv_fast": infer("tv_fast", tv_fast)}
    fns.update({key(n): infer(key(n), m) for n, m in rfcns.items()})
    times = interleaved(fns, args.runs, args.warmup, device, timers)
    counts = {"tv": tv_counter.counts, **{key(n): c.counts for n, c in counters.items()}}
    print_comparison(times, counts, detections)
    print_cost_curve({n: key(n) for n in ladder}, compare_n, times, counts)
    print("## Per-stage breakdown (medians per stage)\n")
    print(stage_table([(f"R-FCN, {n} proposals", timers[key(n)].medians()) for n in ladder]))
    print()
    print(stage_table([("Faster R-CNN FPN, 300 proposals", timers["tv"].medians()),
                       ("same, inference_copy", timers["tv_fast"].medians())]))
    print()


def print_comparison(times: dict[str, list[float]], counts: dict[str, list[int]],
                     detections: dict[str, int]) -> None:
    """The R-FCN vs Faster R-CNN table (keys rfcn, tv, tv_fast) and the speed-up goal."""
    med = {k: statistics.median(v) for k, v in times.items()}
    t_rfcn, t_tv = med["rfcn"], med["tv"]
    speedup = t_tv / t_rfcn
    print("## Inference: R-FCN R-50 vs torchvision Faster R-CNN R-50-FPN\n")
    print(table(
        ["model", "proposals emitted", "detections", "time / image", "runs", "speed-up"],
        [["torchvision fasterrcnn_resnet50_fpn", str(counts["tv"]), str(detections["tv"]),
          fmt_s(t_tv), " ".join(fmt_s(t) for t in times["tv"]), "1.00×"],
         ["rfcn_resnet50", str(counts["rfcn"]), str(detections["rfcn"]),
          fmt_s(t_rfcn), " ".join(fmt_s(t) for t in times["rfcn"]), f"{speedup:.2f}×"],
         ["(for reference) fasterrcnn_resnet50_fpn through inference_copy",
          str(counts["tv"]), str(detections["tv_fast"]), fmt_s(med["tv_fast"]),
          " ".join(fmt_s(t) for t in times["tv_fast"]), f"{t_tv / med['tv_fast']:.2f}×"]],
    ))
    print(f"\nR-FCN vs the same Faster R-CNN through inference_copy: "
          f"{med['tv_fast'] / t_rfcn:.2f}×")
    ok = speedup >= SPEEDUP_GOAL
    print(f"\nGoal R-FCN ≥ {SPEEDUP_GOAL:.1f}× faster: {'PASS' if ok else 'FAIL'} "
          f"({speedup:.2f}×)\n")


def print_cost_curve(keys: dict[int, str], compare_n: int, times: dict[str, list[float]],
                     counts: dict[str, list[int]]) -> None:
    """R-FCN time per rpn_post_nms_top_n_test (keys: proposals -> times key)."""
    med = {k: statistics.median(v) for k, v in times.items()}
    print("## Cost curve: R-FCN R-50 inference time vs test proposals\n")
    base = med[keys[compare_n]]
    rows = [[str(n), str(counts[k]), fmt_s(med[k]), f"{med[k] / base:.3f}×"]
            for n, k in keys.items()]
    print(table(["rpn_post_nms_top_n_test", "proposals emitted", "time / image",
                 f"vs {compare_n}"], rows))
    last = max(keys)
    if last != compare_n:
        top = med[keys[last]] / base
        print(f"\nGoal {last} proposals ≤ {CURVE_GOAL:.2f}× the time of {compare_n}: "
              f"{'PASS' if top <= CURVE_GOAL else 'FAIL'} ({top:.3f}×)\n")


def train_section(
    args: argparse.Namespace, rfcn: nn.Module, tv: nn.Module | None, image: Tensor,
    device: torch.device,
) -> None:
    """Interleaved training steps of both models (tv None: R-FCN only, for --quick)."""
    target = random_targets(image, 5, seed=1)
    models = {"tv": tv, "rfcn": rfcn} if tv is not None else {"rfcn": rfcn}
    opts = {name: torch.optim.SGD([p for p in m.parameters() if p.requires_grad], lr=1e-5,
                                  momentum=0.9, weight_decay=1e-4)
            for name, m in models.items()}

    def step(name: str, model: nn.Module) -> Callable[[], None]:
        def fn() -> None:
            losses = model([image], [target])
            loss = sum(losses.values())
            opts[name].zero_grad(set_to_none=True)
            loss.backward()
            opts[name].step()
        return fn

    with contextlib.ExitStack() as stack:
        for m in models.values():
            stack.enter_context(train_mode(m))
        times = interleaved({k: step(k, m) for k, m in models.items()},
                            args.runs, args.warmup, device)
    med = {k: statistics.median(v) for k, v in times.items()}
    labels = {"tv": "torchvision fasterrcnn_resnet50_fpn", "rfcn": "rfcn_resnet50"}
    ref = med.get("tv", med["rfcn"])
    print("## Training step (1 image, forward + backward + SGD step)\n")
    print(table(["model", "time / step", "runs", "speed-up"],
                [[labels[k], fmt_s(med[k]), " ".join(fmt_s(t) for t in times[k]),
                  f"{ref / med[k]:.2f}×"] for k in models]))
    print()


def runtime_section(
    args: argparse.Namespace, rfcn: nn.Module, torchvision_model: nn.Module, image: Tensor,
    device: torch.device,
) -> None:
    """R-FCN and torchvision's detector through each of ``args.runtime``, timed interleaved
    with torchvision's model as shipped (rfcn.inference.runtime_comparison)."""
    print("## Inference runtimes (CPU): R-FCN R-50 vs torchvision Faster R-CNN R-50-FPN\n")
    if device.type != "cpu":
        print("Skipped: the runtimes compared here run on the CPU (use --device cpu).\n")
        return
    size = (int(image.shape[-2]), int(image.shape[-1]))
    with tempfile.TemporaryDirectory(prefix="bench-runtimes-") as tmp:
        calibration = None
        if "int8" in args.runtime:
            calibration = bench_calibration(args, size, Path(tmp))
        comparison = compare_runtimes(
            args.runtime, rfcn, torchvision_model, image, Path(tmp), runs=args.runs,
            warmup=args.warmup, calibration=calibration, compile_scope=args.compile_scope,
            compile_mode=args.compile_mode)
    print(runtime_report(comparison))


def bench_calibration(args: argparse.Namespace, size: tuple[int, int], tmp: Path
                      ) -> list[Tensor]:
    """Calibration images for the int8 rows: training images of the synthetic dataset (the
    default training run's cache; --quick: a tiny one generated in `tmp`), resized to `size`."""
    if args.quick:
        return synthetic_calibration(args.calibration_images, size, tmp / "synthetic",
                                     num_train=args.calibration_images, num_val=1,
                                     image_size=64)
    return synthetic_calibration(args.calibration_images, size,
                                 Path(args.calibration_root).expanduser(), **SYNTHETIC_DEFAULTS)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    p.add_argument("--runs", type=int, default=None, help="timed runs (default 3, quick 1)")
    p.add_argument("--warmup", type=int, default=None, help="untimed runs (default 1, quick 0)")
    p.add_argument("--quick", action="store_true",
                   help="smoke test: 96×128 input, proposals 100 and 300, one cold run, "
                   "1 thread, no torchvision training step")
    p.add_argument("--score-thresh", type=float, default=0.0,
                   help="box_score_thresh of both models (default 0: every candidate, see above)")
    p.add_argument("--no-train", action="store_true", help="skip the training-step section")
    p.add_argument("--runtime", action="extend", nargs="+", choices=RUNTIMES, default=None,
                   help="inference runtimes to measure (several allowed; default eager). eager: "
                   "the sections below; any other adds the runtime table (CPU)")
    p.add_argument("--compile-scope", choices=COMPILE_SCOPES, default="convs",
                   help="compile: the convolutional parts (default) or the whole forward")
    p.add_argument("--compile-mode", choices=COMPILE_MODES, default="default")
    p.add_argument("--calibration-images", type=int, default=None,
                   help="int8: calibration images (default 16, quick 2)")
    p.add_argument("--calibration-root", default=SYNTHETIC_ROOT,
                   help="int8: cache root of the synthetic dataset (default: the training "
                   "default's, generated there on first use)")
    args = p.parse_args(argv)
    args.runtime = list(dict.fromkeys(args.runtime or ["eager"]))
    if args.calibration_images is None:
        args.calibration_images = 2 if args.quick else 16
    if args.calibration_images < 1:
        p.error("--calibration-images must be >= 1")
    if args.quick:
        args.height, args.width, args.proposals = 96, 128, (100, 300)
        args.runs = 1 if args.runs is None else args.runs
        args.warmup = 0 if args.warmup is None else args.warmup
    else:
        args.height, args.width, args.proposals = 600, 900, PROPOSAL_LADDER
        args.runs = 3 if args.runs is None else args.runs
        args.warmup = 1 if args.warmup is None else args.warmup
    if args.runs < 1 or args.warmup < 0:
        p.error("--runs must be >= 1 and --warmup >= 0")
    return args


if __name__ == "__main__":
    sys.exit(run(parse_args()))
