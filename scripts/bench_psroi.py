"""Benchmark rfcn's PS RoI ops against torchvision's, forward and forward+backward.

Shapes of R-FCN at stride 16 (input 1 x (C*49) x 38 x 63, k = 7, spatial_scale 1/16) for
VOC (C = 21) and COCO (C = 81), with 300 and 2000 RoIs of sides 16-316 px. Times are the
median of --repeat runs after --warmup runs, all in this one process, so the ratios compare
like with like even on a busy machine.

Deformable PS RoI pooling (``deform``, sample_per_part 4, trans_std 0.1, random offsets
Tensor[K, 2*C, 7, 7] of std 1, backward to input and offsets) has no torchvision counterpart:
its table puts our plain ps_roi_align (sampling_ratio 2) at the same shape beside it.

    python scripts/bench_psroi.py                # CPU
    python scripts/bench_psroi.py --cuda         # CUDA (ours vs torchvision CUDA + GB/s)
    python scripts/bench_psroi.py --quick        # small smoke run (tiny shapes, one run)
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import numba
import torch
import torchvision.ops as tvo

from rfcn.ops import deform_ps_roi_pool, ps_roi_align, ps_roi_pool

K_BINS = 7
STRIDE = 16
MAP_HW = (38, 63)


def make_inputs(
    classes: int, n_rois: int, device: torch.device, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    h, w = MAP_HW
    x = torch.randn(1, classes * K_BINS**2, h, w, generator=gen)
    img_h, img_w = h * STRIDE, w * STRIDE
    size = 16 + torch.rand(n_rois, 2, generator=gen) * 300
    x1 = torch.rand(n_rois, generator=gen) * (img_w - size[:, 0])
    y1 = torch.rand(n_rois, generator=gen) * (img_h - size[:, 1])
    rois = torch.stack([torch.zeros(n_rois), x1, y1, x1 + size[:, 0], y1 + size[:, 1]], dim=1)
    return x.to(device), rois.to(device)


def timeit(fn: Callable[[], object], warmup: int, repeat: int, cuda: bool) -> float:
    """Median wall time of ``fn`` in ms."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        if cuda:
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        if cuda:
            torch.cuda.synchronize()
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def bench_one(op_name: str, classes: int, n_rois: int, args: argparse.Namespace) -> dict:
    device = torch.device("cuda" if args.cuda else "cpu")
    x, rois = make_inputs(classes, n_rois, device)
    scale = 1.0 / STRIDE
    if op_name == "pool":
        ours = lambda t: ps_roi_pool(t, rois, K_BINS, scale)  # noqa: E731
        theirs = lambda t: tvo.ps_roi_pool(t, rois, K_BINS, scale)  # noqa: E731
    else:
        ours = lambda t: ps_roi_align(t, rois, K_BINS, scale, 2)  # noqa: E731
        theirs = lambda t: tvo.ps_roi_align(t, rois, K_BINS, scale, 2)  # noqa: E731
    grad = torch.randn(n_rois, classes, K_BINS, K_BINS, device=device)
    xg = x.clone().requires_grad_()

    def fwd_bwd(fn):
        def run():
            xg.grad = None
            fn(xg).backward(grad)

        return run

    row = dict(op=op_name, classes=classes, rois=n_rois)
    with torch.no_grad():
        row["exact"] = bool(torch.equal(ours(x), theirs(x)))
        row["tv_fwd"] = timeit(lambda: theirs(x), args.warmup, args.repeat, args.cuda)
        row["our_fwd"] = timeit(lambda: ours(x), args.warmup, args.repeat, args.cuda)
    row["tv_fb"] = timeit(fwd_bwd(theirs), args.warmup, args.repeat, args.cuda)
    row["our_fb"] = timeit(fwd_bwd(ours), args.warmup, args.repeat, args.cuda)
    if args.cuda:
        # bytes the forward must move at least: every bin's pixels once, plus the output
        itemsize = x.element_size()
        row["our_fwd_gbs"] = (
            (_bin_pixels(rois, x.shape, op_name) * itemsize + grad.numel() * itemsize)
            / (row["our_fwd"] * 1e-3)
            / 1e9
        )
    return row


def bench_deform(classes: int, n_rois: int, args: argparse.Namespace) -> dict:
    """Deformable PS RoI pooling, with our ps_roi_align at the same shape as the reference."""
    device = torch.device("cuda" if args.cuda else "cpu")
    x, rois = make_inputs(classes, n_rois, device)
    gen = torch.Generator().manual_seed(1)
    offsets = torch.randn(n_rois, 2 * classes, K_BINS, K_BINS, generator=gen).to(device)
    scale = 1.0 / STRIDE
    deform = lambda t, o: deform_ps_roi_pool(t, rois, o, K_BINS, scale, 0.1, 4)  # noqa: E731
    align = lambda t, o: ps_roi_align(t, rois, K_BINS, scale, 2)  # noqa: E731
    grad = torch.randn(n_rois, classes, K_BINS, K_BINS, device=device)
    xg = x.clone().requires_grad_()
    og = offsets.clone().requires_grad_()

    def fwd_bwd(fn):
        def run():
            xg.grad = og.grad = None
            fn(xg, og).backward(grad)

        return run

    row = dict(op="deform", classes=classes, rois=n_rois)
    with torch.no_grad():
        row["align_fwd"] = timeit(lambda: align(x, offsets), args.warmup, args.repeat, args.cuda)
        row["deform_fwd"] = timeit(
            lambda: deform(x, offsets), args.warmup, args.repeat, args.cuda
        )
    row["align_fb"] = timeit(fwd_bwd(align), args.warmup, args.repeat, args.cuda)
    row["deform_fb"] = timeit(fwd_bwd(deform), args.warmup, args.repeat, args.cuda)
    return row


def _bin_pixels(rois: torch.Tensor, shape: torch.Size, op_name: str) -> float:
    """Input elements read by the forward (pool: bin areas; align: 4 per sample, 2x2 grid)."""
    n_bins = rois.shape[0] * shape[1]
    if op_name == "align":
        return float(n_bins * 4 * 4)
    h, w = shape[2], shape[3]
    r = rois[:, 1:].cpu() / STRIDE
    rw = (r[:, 2].round() - r[:, 0].round()).clamp(min=1).clamp(max=w)
    rh = (r[:, 3].round() - r[:, 1].round()).clamp(min=1).clamp(max=h)
    return float(((rw / K_BINS).ceil() + 1).mul((rh / K_BINS).ceil() + 1).sum()) * shape[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cuda", action="store_true", help="benchmark on the GPU")
    parser.add_argument(
        "--ops",
        nargs="+",
        default=["pool", "align", "deform"],
        choices=["pool", "align", "deform"],
    )
    parser.add_argument("--classes", nargs="+", type=int, default=[21, 81])
    parser.add_argument(
        "--deform-classes", nargs="+", type=int, default=[81], help="C of the deform rows"
    )
    parser.add_argument("--rois", nargs="+", type=int, default=[300, 2000])
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--threads", type=int, default=None, help="torch (and our) threads")
    parser.add_argument(
        "--quick", action="store_true", help="smoke run: C = 5, 30 RoIs, one cold run"
    )
    args = parser.parse_args()
    if args.quick:
        args.classes, args.deform_classes, args.rois = [5], [5], [30]
        args.warmup, args.repeat = 0, 1
    if args.cuda and not torch.cuda.is_available():
        parser.error("--cuda: no CUDA device")
    if args.threads:
        numba.get_num_threads()  # start Numba's threading layer first: it resets torch's count
        torch.set_num_threads(args.threads)
    device = (
        torch.cuda.get_device_name() if args.cuda else f"CPU, {torch.get_num_threads()} threads"
    )
    print(
        f"# PS RoI ops, {device}, torch {torch.__version__}, "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}"
    )
    print(f"# median of {args.repeat} after {args.warmup} warm-up; ms; ratio = torchvision / ours")
    tv_ops = [op for op in args.ops if op != "deform"]
    if tv_ops:
        _print_tv_table(tv_ops, args)
    if "deform" in args.ops:
        _print_deform_table(args)


def _print_tv_table(ops: list[str], args: argparse.Namespace) -> None:
    head = (
        "| op | C | RoIs | tv fwd | ours fwd | x | tv fwd+bwd | ours fwd+bwd | x | fwd bit-exact |"
    )
    if args.cuda:
        head += " ours fwd GB/s |"
    print(head)
    print("|" + "---|" * (head.count("|") - 1))
    for op_name in ops:
        for classes in args.classes:
            for n_rois in args.rois:
                r = bench_one(op_name, classes, n_rois, args)
                line = (
                    f"| {op_name} | {classes} | {n_rois} | {r['tv_fwd']:.1f} | {r['our_fwd']:.1f} "
                    f"| {r['tv_fwd'] / r['our_fwd']:.1f} | {r['tv_fb']:.1f} | {r['our_fb']:.1f} "
                    f"| {r['tv_fb'] / r['our_fb']:.1f} | {'yes' if r['exact'] else 'no'} |"
                )
                if args.cuda:
                    line += f" {r['our_fwd_gbs']:.0f} |"
                print(line, flush=True)


def _print_deform_table(args: argparse.Namespace) -> None:
    print()
    print(
        "# deform: deform_ps_roi_pool (4x4 samples/bin, offsets Tensor[K, 2C, 7, 7], grads to "
        "input and offsets); no torchvision counterpart, reference = our ps_roi_align (2x2)"
    )
    head = (
        "| op | C | RoIs | ps_roi_align fwd | deform fwd | ps_roi_align fwd+bwd "
        "| deform fwd+bwd |"
    )
    print(head)
    print("|" + "---|" * (head.count("|") - 1))
    for classes in args.deform_classes:
        for n_rois in args.rois:
            r = bench_deform(classes, n_rois, args)
            print(
                f"| deform | {classes} | {n_rois} | {r['align_fwd']:.1f} | {r['deform_fwd']:.1f} "
                f"| {r['align_fb']:.1f} | {r['deform_fb']:.1f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
