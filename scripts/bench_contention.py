"""tools/eval.py on a busy machine: the same checkpoint evaluated quiet and beside competing
single-threaded processes, interleaved, with the default thread budget and with the old
fixed budget (every core), to check issue 20's target (busy <= 2.5x quiet; a fair share of
two cores with two competitors is 2x).

    python scripts/bench_contention.py [--checkpoint PATH] [--busy 2] [--runs 2]
    python scripts/bench_contention.py --quick        # a smoke run (tiny model)

Without --checkpoint it trains a short run of the default recipe on the synthetic set first
(the checkpoint's own dataset is then evaluated: the synthetic val split).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from rfcn.inference.bench_report import environment, table
from rfcn.inference.contention import competing_processes, seconds_per_image
from rfcn.utils.process import resolve_device

REPO = Path(__file__).resolve().parents[1]
QUICK = ["model.min_size=96", "model.max_size=128", "model.train_min_sizes=null",
         "model.anchor_sizes=[32,64]", "model.aspect_ratios=[0.5,1.0,2.0]", "model.k=3",
         "model.head_dim=32", "model.rpn_dim=32", "dataset.num_train=8", "dataset.num_val=6",
         "dataset.image_size=128"]


def _tool(name: str, *args: str) -> str:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS",)}
    proc = subprocess.run([sys.executable, str(REPO / "tools" / name), *args], cwd=REPO,
                          capture_output=True, text=True, env=env, timeout=3600)
    if proc.returncode != 0:
        sys.exit(f"error: tools/{name} failed:\n{proc.stderr[-3000:]}")
    return proc.stdout + proc.stderr  # the tools log to the console's stdout


def _checkpoint(args: argparse.Namespace, tmp: Path) -> Path:
    if args.checkpoint:
        return Path(args.checkpoint)
    extra = QUICK + [f"dataset.root={tmp / 'synthetic'}"] if args.quick else []
    print(f"training a {args.train_iters}-iteration run for the checkpoint ...", flush=True)
    _tool("train.py", f"hydra.run.dir={tmp / 'run'}", f"train.max_iter={args.train_iters}",
          "train.progress=false", *extra)
    return tmp / "run" / "checkpoints" / "last.pt"


def _eval(ckpt: Path, out: Path, threads: str | None) -> float:
    keys = [f"checkpoint={ckpt}", f"hydra.run.dir={out}", "analysis=false", "num_workers=1"]
    if threads is not None:
        keys.append(f"num_threads={threads}")
    return seconds_per_image(_tool("eval.py", *keys))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", help="a trained checkpoint (default: train one)")
    parser.add_argument("--busy", type=int, default=2, help="competing processes")
    parser.add_argument("--runs", type=int, default=2, help="repeats of each condition")
    parser.add_argument("--train-iters", type=int, default=40)
    parser.add_argument("--quick", action="store_true", help="tiny model, one run each")
    args = parser.parse_args()
    if args.quick:
        args.runs, args.train_iters = 1, 2
    cores = len(os.sched_getaffinity(0))
    budgets = {"default budget (idle cores)": None, f"every core ({cores} threads)": str(cores)}
    times: dict[tuple[str, str], list[float]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-contention-") as tmp_name:
        tmp = Path(tmp_name)
        ckpt = _checkpoint(args, tmp)
        for run in range(args.runs):
            for label, threads in budgets.items():
                out = tmp / f"eval-{run}"
                times.setdefault((label, "quiet"), []).append(_eval(ckpt, out, threads))
                with competing_processes(args.busy):
                    times.setdefault((label, "busy"), []).append(_eval(ckpt, out, threads))
    quiet_ref = statistics.median(times[next(iter(budgets)), "quiet"])
    rows = []
    for label in budgets:
        quiet = statistics.median(times[label, "quiet"])
        busy = statistics.median(times[label, "busy"])
        rows.append([label, f"{quiet:.3f}", f"{busy:.3f}", f"{busy / quiet:.2f}×",
                     f"{busy / quiet_ref:.2f}×"])
    print(f"\n{environment(resolve_device('cpu'))}\n{args.busy} competing single-threaded "
          f"processes, {args.runs} run(s) per condition, interleaved; s / image (median)\n")
    print(table(["threads", "quiet", f"beside {args.busy} busy", "busy / quiet",
                 "busy / quiet (default budget)"], rows))


if __name__ == "__main__":
    main()
