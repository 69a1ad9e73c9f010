"""Training throughput of the default recipe (configs/train.yaml) and the data loader's share.

    python scripts/bench_train.py                       # the default recipe, < 5 min on 2 cores
    python scripts/bench_train.py model=rfcn_r50 solver.ims_per_batch=1   # Hydra overrides
    python scripts/bench_train.py --quick               # tiny smoke run

The config is composed from configs/train.yaml with Hydra's compose API and the objects are
built the way `tools/train.py` builds them (rfcn.assembly, rfcn.utils.process's thread setup,
rfcn.data.loader.build_train_loader with train.num_workers workers). Each timed step is
`Trainer.run_step`, the trainer's own iteration: forward, guards, backward, optimizer step,
LR scheduler step (no hooks: no checkpoint, evaluation or logging).

Printed:
- images/s of the training loop after --warmup steps, and the time spent waiting for the next
  batch as a share of the step time (the loader is the bottleneck when that share is large);
- the loader alone: its in-process cost per batch (num_workers=0, what the workers spend per
  batch) and the share of the 2 cores it takes while training runs;
- the thread budget: torch intra-op threads, Numba threads, DataLoader workers, cores.
The synthetic dataset is generated on first use into its cache directory (like tools/train.py);
that one-off generation is timed separately and not part of the numbers.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numba
import torch
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from rfcn import assembly
from rfcn import config as rc
from rfcn.data.loader import build_train_loader
from rfcn.engine.trainer import Trainer
from rfcn.inference.bench_report import environment, table
from rfcn.utils.process import amp_dtype, configure_threads, seed_everything, setup_device

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"


def compose_config(overrides: list[str]) -> DictConfig:
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return compose("train", overrides=overrides)


def loader_cost(train_ds: Any, cfg: DictConfig, transforms: Any, batches: int) -> float:
    """Median in-process seconds per batch (num_workers=0): the CPU a worker spends per batch."""
    loader = iter(build_train_loader(train_ds, cfg.solver.ims_per_batch, seed=cfg.train.seed + 1,
                                     num_workers=0, transforms=transforms))
    times = []
    for _ in range(batches):
        t0 = time.perf_counter()
        next(loader)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _setup(args: argparse.Namespace) -> tuple[Any, ...]:
    """The config, device, thread count, training set, model, trainer and transforms, built
    as tools/train.py builds them (auto sizing included)."""
    overrides = list(args.overrides)
    tmp = None
    if args.quick:
        tmp = tempfile.TemporaryDirectory(prefix="bench_train_")
        overrides = [f"dataset.root={tmp.name}", "dataset.num_train=8", "dataset.num_val=2",
                     "dataset.image_size=64", "model.min_size=64", "model.max_size=96",
                     "solver.ims_per_batch=2", "train.num_threads=1", *overrides]
    cfg = compose_config(overrides)
    device = setup_device(cfg.train.device)
    threads = configure_threads(cfg.train.num_threads, cfg.train.num_workers)
    seed_everything(cfg.train.seed)
    started = time.perf_counter()
    train_ds, _ = assembly.build_datasets(cfg.dataset)
    assembly.apply_auto_sizing(cfg, train_ds)
    gen_s = time.perf_counter() - started
    model = assembly.build_model(cfg.model, len(train_ds.class_names)).to(device)
    optimizer, lr_multiplier = assembly.build_solver(cfg.solver, model, cfg.train.max_iter)
    trainer = Trainer(
        model=model, model_without_ddp=model, optimizer=optimizer, lr_multiplier=lr_multiplier,
        loader_factory=lambda start: [], device=device, output_dir=Path(tempfile.gettempdir()),
        settings=assembly.trainer_settings(cfg.train, amp_dtype(rc.plain(cfg.train.amp), device)),
        checkpoint_meta={},
    )
    transforms = assembly.build_train_transforms(cfg.aug, model)
    return cfg, overrides, tmp, device, threads, train_ds, gen_s, model, trainer, transforms


def _print_setup(cfg: Any, overrides: list[str], device: torch.device, threads: int,
                 train_ds: Any, gen_s: float, model: Any) -> None:
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    print(f"# Training benchmark\n\n`{' '.join(['python', *sys.argv])}`\n")
    print(f"{environment(device)}; device {device}\n")
    print(f"Recipe: model {cfg.model.name}, dataset {cfg.dataset.name} ({len(train_ds)} train "
          f"images), {cfg.solver.ims_per_batch} images/step, training sizes "
          f"{list(model.spec.images.training_sizes)} max_size {model.spec.images.max_size}, "
          f"overrides {overrides or 'none'}; dataset ready in {gen_s:.1f} s (not timed below)\n")
    print(table(["threads", "count"], [
        ["cores (affinity)", str(cores)],
        ["torch intra-op threads (main process)", str(threads)],
        ["torch inter-op threads", str(torch.get_num_interop_threads())],
        ["Numba threads (PS RoI kernels use min(this, torch threads))",
         str(numba.get_num_threads())],
        ["DataLoader workers (1 torch + 1 OpenCV thread each)", str(cfg.train.num_workers)],
    ]))
    print()


def _time_steps(args: argparse.Namespace, cfg: Any, device: torch.device, train_ds: Any,
                trainer: Trainer, transforms: Any) -> tuple[list[float], list[float], float]:
    """(step times, waits for the next batch, first batch time) of `Trainer.run_step`."""
    trainer.before_train()
    trainer.model.train()
    data = iter(build_train_loader(train_ds, int(cfg.solver.ims_per_batch), seed=cfg.train.seed,
                                   num_workers=int(cfg.train.num_workers), transforms=transforms))
    waits, steps, first_batch = [], [], 0.0
    t_first = time.perf_counter()
    for i in range(args.warmup + args.steps):
        t0 = time.perf_counter()
        batch = next(data)
        t1 = time.perf_counter()
        trainer.run_step(batch)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t2 = time.perf_counter()
        if i == 0:
            first_batch = t1 - t_first
        if i >= args.warmup:
            waits.append(t1 - t0)
            steps.append(t2 - t0)
    return steps, waits, first_batch


def run(args: argparse.Namespace) -> int:
    started = time.perf_counter()
    cfg, overrides, tmp, device, threads, train_ds, gen_s, model, trainer, transforms = \
        _setup(args)
    _print_setup(cfg, overrides, device, threads, train_ds, gen_s, model)
    steps, waits, first_batch = _time_steps(args, cfg, device, train_ds, trainer, transforms)
    batch_size = int(cfg.solver.ims_per_batch)
    total, wait = sum(steps), sum(waits)
    per_batch = loader_cost(train_ds, cfg, transforms, max(3, min(args.steps, 10)))
    step_med = statistics.median(steps)
    print(f"## Training loop ({args.steps} steps after {args.warmup} warm-up)\n")
    print(table(["metric", "value"], [
        ["images / s", f"{batch_size * len(steps) / total:.2f}"],
        ["step time (median)", f"{step_med:.3f} s"],
        ["waiting for the next batch (median)", f"{statistics.median(waits) * 1000:.1f} ms"],
        ["loader share of step time (wait / total)", f"{100 * wait / total:.1f}%"],
        ["first batch (worker start-up, not in the numbers)", f"{first_batch:.2f} s"],
        ["loader cost per batch in-process (num_workers=0)", f"{per_batch * 1000:.0f} ms"],
        ["loader CPU vs step time", f"{100 * per_batch / step_med:.1f}%"],
    ]))
    share = wait / total
    print(f"\nLoader bottleneck: {'YES' if share > 0.10 else 'no'} "
          f"({100 * share:.1f}% of the step time waiting for data; workers need "
          f"{per_batch * 1000:.0f} ms of CPU per {step_med * 1000:.0f} ms step)\n")
    print(f"Benchmark wall time {time.perf_counter() - started:.0f} s.")
    if tmp is not None:
        tmp.cleanup()
    return 0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--steps", type=int, default=None, help="timed steps (default 10, quick 2)")
    p.add_argument("--warmup", type=int, default=None, help="untimed steps (default 2, quick 1)")
    p.add_argument("--quick", action="store_true",
                   help="smoke test: 8 tiny images in a temporary directory, 64 px")
    p.add_argument("overrides", nargs="*", help="Hydra overrides of configs/train.yaml")
    args = p.parse_args(argv)
    args.steps = args.steps if args.steps is not None else (2 if args.quick else 10)
    args.warmup = args.warmup if args.warmup is not None else (1 if args.quick else 2)
    if args.steps < 1 or args.warmup < 0:
        p.error("--steps must be >= 1 and --warmup >= 0")
    return args


if __name__ == "__main__":
    sys.exit(run(parse_args()))
