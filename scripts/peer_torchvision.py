"""rfcn against torchvision's Faster R-CNN (ResNet-18 FPN from scratch) on the same data, image
sizes, iterations, loader, augmentation and evaluator (rfcn.assembly.peer).

    python scripts/peer_torchvision.py [--lrs 1e-3,3e-3,1e-2] [--sweep-iters 200] \\
        [--rfcn-run DIR] [--equal-iters] [--out DIR] [Hydra overrides of tools/train.py ...]
    python scripts/peer_torchvision.py --quick      # a smoke run on a tiny synthetic set

1. A short sweep of the peer's learning rate (`solver.base_lr`, --sweep-iters each); the best
   AP wins (the default recipe's AdamW, warm-up and cosine schedule otherwise).
2. rfcn's default run of the same overrides (or `--rfcn-run DIR`: a finished tools/train.py run
   of them, its metrics.json).
3. The peer with that rate and the iterations that fit rfcn's wall time (from the sweep run's
   seconds per iteration and fixed start-up + evaluation time): equal wall time.
4. `--equal-iters`: the peer at the full `train.max_iter` too (Faster R-CNN's per-RoI head
   costs far more per iteration than R-FCN's: ~9x on BCCD on 2 cores, so this is long).
Walls count start-up, training and the final evaluation, one process at a time.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

from hydra import compose, initialize_config_dir

from rfcn.entrypoints.peer import train_peer
from rfcn.entrypoints.train import train
from rfcn.inference.bench_report import environment, table
from rfcn.utils.process import resolve_device

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"
QUICK = ["model.min_size=96", "model.max_size=128", "model.train_min_sizes=null",
         "model.anchor_sizes=[32,64]", "model.k=3", "model.head_dim=32", "model.rpn_dim=32",
         "dataset.num_train=8", "dataset.num_val=4", "dataset.image_size=128",
         "train.max_iter=4", "train.num_workers=0"]


def _config(overrides: list[str], out: Path, **keys: Any) -> Any:
    extra = [f"{k}={v}" for k, v in keys.items()]
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return compose("train", overrides=[*overrides, f"output_dir={out}",
                                           "train.progress=false", *extra])


def _log_to(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("[%(asctime)s][%(name)s][%(levelname)s] - %(message)s"))
    logging.basicConfig(level=logging.INFO, handlers=[handler])


def _row(name: str, m: dict[str, Any]) -> list[str]:
    per_class = ", ".join(f"{k} {v:.3f}" for k, v in (m.get("per_class") or {}).items()
                          if v is not None)
    return [name, str(m.get("iteration", "")), f"{m['AP']:.3f}", f"{m['AP50']:.3f}",
            f"{m['AP75']:.3f}", per_class, f"{m['wall_s']:.0f} s"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("overrides", nargs="*", help="tools/train.py keys (dataset=..., ...)")
    parser.add_argument("--lrs", default="1e-3,3e-3,1e-2", help="peer learning rates to sweep")
    parser.add_argument("--sweep-iters", type=int, default=200)
    parser.add_argument("--rfcn-run", help="a finished tools/train.py run of the same keys")
    parser.add_argument("--equal-iters", action="store_true",
                        help="also at rfcn's iterations (train.max_iter)")
    parser.add_argument("--out", default="runs/peer", help="output folder")
    parser.add_argument("--quick", action="store_true", help="tiny smoke run")
    args = parser.parse_args()
    out = Path(args.out).resolve()
    overrides = [*args.overrides, *(QUICK + [f"dataset.root={out / 'synthetic'}"]
                                    if args.quick else [])]
    if any(o.startswith(("output_dir=", "+output_dir=", "hydra.")) for o in overrides):
        sys.exit("error: overrides: the output folders are --out's (no output_dir / hydra keys)")
    try:
        lrs = [float(x) for x in args.lrs.split(",") if x]
    except ValueError:
        sys.exit(f"error: --lrs: {args.lrs!r} is not a comma-separated list of numbers")
    sweep_iters = 2 if args.quick else args.sweep_iters
    _log_to(out / "peer.log")
    print(f"logging to {out / 'peer.log'}", flush=True)
    sweep = {}
    for lr in lrs:
        m = train_peer(_config(overrides, out / f"sweep-lr{lr:g}", **{
            "solver.base_lr": lr, "train.max_iter": sweep_iters}))
        sweep[lr] = m
        print(f"sweep: lr {lr:g}, {sweep_iters} iterations: AP {m['AP']:.3f} "
              f"({m['wall_s']:.0f} s)", flush=True)
    best_lr = max(sweep, key=lambda lr: sweep[lr]["AP"])
    if args.rfcn_run:
        metrics_file = Path(args.rfcn_run) / "metrics.json"
        if not metrics_file.is_file():
            sys.exit(f"error: --rfcn-run: no {metrics_file}")
        rfcn = json.loads(metrics_file.read_text())
        if "wall_s" not in rfcn:
            sys.exit(f"error: --rfcn-run: {metrics_file} has no wall_s (an older run)")
    else:
        rfcn = train(_config(overrides, out / "rfcn"))
    rows = [_row("rfcn (default recipe)", rfcn)]
    # the fixed part (start-up, evaluation) is the sweep run's wall minus its iterations
    best = sweep[best_lr]
    fixed = best["wall_s"] - best["seconds_per_iteration"] * int(best["iteration"])
    iters = max(1, round((rfcn["wall_s"] - fixed) / best["seconds_per_iteration"]))
    same_wall = train_peer(_config(overrides, out / "peer-equal-wall", **{
        "solver.base_lr": best_lr, "train.max_iter": iters}))
    rows.append(_row(f"peer, lr {best_lr:g}, equal wall time", same_wall))
    if args.equal_iters:
        peer = train_peer(_config(overrides, out / "peer", **{"solver.base_lr": best_lr}))
        rows.append(_row(f"peer, lr {best_lr:g}, equal iterations", peer))
    print(f"\n{environment(resolve_device('cpu'))}\nkeys: {' '.join(args.overrides) or '(none)'}"
          f"\nsweep ({sweep_iters} iterations): "
          + ", ".join(f"lr {lr:g} AP {m['AP']:.3f}" for lr, m in sweep.items()) + "\n")
    print(table(["model", "iterations", "AP", "AP50", "AP75", "per class AP", "wall"], rows))


if __name__ == "__main__":
    main()
