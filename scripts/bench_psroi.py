"""Benchmark rfcn's PS RoI ops against torchvision's, forward and forward+backward.

Shapes of R-FCN at stride 16 (input 1 x (C*49) x 38 x 63, k = 7, spatial_scale 1/16) for
VOC (C = 21) and COCO (C = 81), with 300 and 2000 RoIs of sides 16-316 px. Times are the
median of --repeat runs after --warmup runs, all in this one process, so the ratios compare
like with like even on a busy machine.

    python scripts/bench_psroi.py                # CPU
    python scripts/bench_psroi.py --cuda         # CUDA (ours vs torchvision CUDA + GB/s)
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
import torchvision.ops as tvo

from rfcn.ops import ps_roi_align, ps_roi_pool

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
    parser.add_argument("--ops", nargs="+", default=["pool", "align"], choices=["pool", "align"])
    parser.add_argument("--classes", nargs="+", type=int, default=[21, 81])
    parser.add_argument("--rois", nargs="+", type=int, default=[300, 2000])
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--threads", type=int, default=None, help="torch (and our) threads")
    args = parser.parse_args()
    if args.cuda and not torch.cuda.is_available():
        parser.error("--cuda: no CUDA device")
    if args.threads:
        torch.set_num_threads(args.threads)
    device = (
        torch.cuda.get_device_name() if args.cuda else f"CPU, {torch.get_num_threads()} threads"
    )
    print(
        f"# PS RoI ops, {device}, torch {torch.__version__}, "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}"
    )
    print(f"# median of {args.repeat} after {args.warmup} warm-up; ms; ratio = torchvision / ours")
    head = (
        "| op | C | RoIs | tv fwd | ours fwd | x | tv fwd+bwd | ours fwd+bwd | x | fwd bit-exact |"
    )
    if args.cuda:
        head += " ours fwd GB/s |"
    print(head)
    print("|" + "---|" * (head.count("|") - 1))
    for op_name in args.ops:
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


if __name__ == "__main__":
    main()
