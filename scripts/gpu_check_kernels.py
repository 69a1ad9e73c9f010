"""The CUDA kernels against the CPU kernels on fresh random inputs (a GPU check, run by
scripts/gpu_check.sh): forward and backward of ps_roi_pool, ps_roi_align and
deform_ps_roi_pool in float32 and float64, and fp16 / bf16 through autocast (computed in
float32, returned in the input dtype).

    python scripts/gpu_check_kernels.py --out report.json     # exit 1 on a mismatch
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable

import torch

from rfcn.ops import deform_ps_roi_pool, ps_roi_align, ps_roi_pool

K = 3
SCALE = 1.0 / 16


def _inputs(dtype: torch.dtype, seed: int) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(2, 5 * K * K, 23, 31, generator=g, dtype=torch.float64).to(dtype)
    n = 64
    xy = torch.rand(n, 2, generator=g, dtype=torch.float64) * torch.tensor([31 * 16, 23 * 16])
    wh = 8 + torch.rand(n, 2, generator=g, dtype=torch.float64) * 250
    boxes = torch.cat([xy - 20, xy + wh], 1)  # some cross the border
    rois = torch.cat([torch.randint(0, 2, (n, 1), generator=g).double(), boxes], 1).to(dtype)
    offsets = (torch.randn(n, 2 * 5, K, K, generator=g, dtype=torch.float64) * 0.5).to(dtype)
    return x, rois, offsets


OPS: dict[str, Callable[..., torch.Tensor]] = {
    "ps_roi_pool": lambda x, r, o: ps_roi_pool(x, r, K, SCALE),
    "ps_roi_align": lambda x, r, o: ps_roi_align(x, r, K, SCALE, 2),
    "deform_ps_roi_pool": lambda x, r, o: deform_ps_roi_pool(x, r, o, K, SCALE, 0.1, 4),
}


def _run(op: Callable, x: torch.Tensor, rois: torch.Tensor, offsets: torch.Tensor,
         device: str) -> tuple[torch.Tensor, ...]:
    x = x.to(device).requires_grad_(True)
    o = offsets.to(device).requires_grad_(True)
    out = op(x, rois.to(device), o)
    grad = torch.linspace(-1, 1, out.numel(), dtype=out.dtype, device=device).reshape(out.shape)
    gx, go = torch.autograd.grad(out, (x, o), grad, allow_unused=True)
    go = torch.zeros_like(o) if go is None else go
    return tuple(t.detach().cpu() for t in (out, gx, go))


def _max_diff(a: tuple[torch.Tensor, ...], b: tuple[torch.Tensor, ...]) -> list[float]:
    return [float((p.double() - q.double()).abs().max()) if p.numel() else 0.0
            for p, q in zip(a, b, strict=True)]


def check_exact(name: str, dtype: torch.dtype, seed: int) -> dict:
    x, rois, offsets = _inputs(dtype, seed)
    t0 = time.perf_counter()
    gpu = _run(OPS[name], x, rois, offsets, "cuda")
    torch.cuda.synchronize()
    cpu = _run(OPS[name], x, rois, offsets, "cpu")
    fwd, gx, go = _max_diff(gpu, cpu)
    tol = 1e-4 if dtype == torch.float32 else 1e-10  # atomics reorder the gradient sums
    ok = max(fwd, gx, go) <= tol * max(1.0, float(cpu[1].abs().max()))
    return {"op": name, "dtype": str(dtype).removeprefix("torch."), "forward_max_diff": fwd,
            "grad_input_max_diff": gx, "grad_offsets_max_diff": go, "ok": bool(ok),
            "seconds": time.perf_counter() - t0}


def check_autocast(name: str, dtype: torch.dtype, seed: int) -> dict:
    x, rois, offsets = _inputs(torch.float32, seed)
    with torch.autocast("cuda", dtype=dtype):
        out = OPS[name](x.cuda().to(dtype), rois.cuda(), offsets.cuda())
    ref = OPS[name](x.to(dtype).float(), rois, offsets)  # the same rounded input, fp32 on CPU
    diff = float((out.float().cpu() - ref).abs().max())
    ok = out.dtype == dtype and diff <= 1e-2 * max(1.0, float(ref.abs().max()))
    return {"op": name, "dtype": f"autocast {str(dtype).removeprefix('torch.')}",
            "output_dtype": str(out.dtype).removeprefix("torch."), "forward_max_diff": diff,
            "ok": bool(ok)}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", required=True, help="JSON report")
    p.add_argument("--seeds", type=int, default=3)
    args = p.parse_args()
    if not torch.cuda.is_available():
        print("error: CUDA is not available (torch.cuda.is_available() is False)",
              file=sys.stderr)
        return 2
    rows = []
    for name in OPS:
        for seed in range(args.seeds):
            for dtype in (torch.float32, torch.float64):
                rows.append(check_exact(name, dtype, seed))
        for dtype in (torch.float16, torch.bfloat16):
            rows.append(check_autocast(name, dtype, 0))
    for r in rows:
        print(json.dumps(r))
    report = {"device": torch.cuda.get_device_name(), "torch": torch.__version__,
              "all_ok": all(r["ok"] for r in rows), "checks": rows}
    with open(args.out, "w") as f:
        json.dump(report, f, indent=2)
    print(f"{sum(r['ok'] for r in rows)}/{len(rows)} checks ok -> {args.out}")
    return 0 if report["all_ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
