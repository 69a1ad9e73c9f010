"""Set up the process a run lives in: its device (cuda:LOCAL_RANK under torchrun), the
process group, the thread budget, the RNG seeds."""

from __future__ import annotations

import logging
import os
import random
import statistics
import time

import numpy as np
import torch

from rfcn.utils.distributed import init_distributed, local_rank

logger = logging.getLogger(__name__)

AMP_DTYPES: dict[str, torch.dtype | None] = {
    "none": None, "fp16": torch.float16, "bf16": torch.bfloat16,
}


def resolve_device(name: str) -> torch.device:
    """"cpu", "cuda", "cuda:N" or "auto" (CUDA when available)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name not in ("cpu", "cuda") and not name.startswith("cuda:"):
        raise ValueError(f"train.device must be cpu, cuda or auto, got {name!r}")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} requested but CUDA is not available")
    return torch.device(name)


def setup_device(name: str) -> torch.device:
    """The device of this process (cuda:LOCAL_RANK under torchrun)."""
    device = resolve_device(name)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", local_rank())
        torch.cuda.set_device(device)
    return device


def setup_process(device_name: str, num_threads: int | None, num_workers: int) -> torch.device:
    """Device, process group (when started by torchrun) and threads; returns the device."""
    device = setup_device(device_name)
    init_distributed(device)
    configure_threads(num_threads, num_workers)
    return device


def _cores() -> int:
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return cores or 1


def busy_cores(samples: int = 5, interval: float = 0.02) -> int:
    """How many cores other processes keep busy now: the median of a few readings of the
    kernel's runnable-task count (/proc/stat procs_running), less this process (0 where
    there is no /proc)."""
    counts = []
    for k in range(samples):
        try:
            with open("/proc/stat") as f:
                line = next(ln for ln in f if ln.startswith("procs_running"))
        except (OSError, StopIteration):
            return 0
        counts.append(int(line.split()[1]) - 1)
        if k + 1 < samples:
            time.sleep(interval)
    return max(0, int(statistics.median(counts)))


def thread_budget(num_threads: int | None, env: dict[str, str] | None = None,
                  busy: int | None = None) -> tuple[int, str]:
    """Intra-op threads of this process and why: `num_threads` when given, else
    OMP_NUM_THREADS when set, else this process's share of the cores other processes leave
    idle (the cores of this node split between its torchrun processes, at least 1)."""
    env = os.environ if env is None else env
    if num_threads:
        return int(num_threads), "as configured"
    if env.get("OMP_NUM_THREADS", "").strip().isdigit() and int(env["OMP_NUM_THREADS"]) > 0:
        return int(env["OMP_NUM_THREADS"]), "from OMP_NUM_THREADS"
    cores = _cores()
    local_world = int(env.get("LOCAL_WORLD_SIZE", "1"))
    busy = busy_cores() if busy is None else busy
    idle = max(1, cores - busy)
    threads = max(1, min(cores, idle) // local_world)
    return threads, (f"{cores} cores, {busy} busy with other work, {local_world} process(es) "
                     "on this node")


def configure_threads(num_threads: int | None, num_workers: int) -> int:
    """Set the thread budget of this process (see `thread_budget`); returns the threads.

    torch's intra-op pool and Numba's (the PS RoI kernels) get the same count and never run
    at the same time (a kernel runs between two torch ops). Numba runs on its `workqueue`
    layer, whose idle threads sleep instead of spinning against torch's OpenMP threads.
    Loader workers are separate processes with one thread each, at a lower priority
    (rfcn.data.loader), so they take what the computation leaves.
    """
    threads, why = thread_budget(num_threads)
    import numba

    if numba.config.THREADING_LAYER == "default":
        numba.config.THREADING_LAYER = "workqueue"
    numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
    torch.set_num_threads(threads)
    # OpenCV's thread pool does not survive fork(): a data worker forked while the pool is
    # live can deadlock in its first cv2 call. OpenCV serial in the main process (it only
    # draws and, once, generates the synthetic data) keeps the pool from ever starting.
    import cv2

    cv2.setNumThreads(0)
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    if threads * local_world > _cores():
        logger.warning("%d threads x %d processes on %d cores: oversubscribed, expect slow steps",
                       threads, local_world, _cores())
    logger.info("threads: %d for torch and Numba (%s); data workers %d per process", threads,
                why, num_workers)
    return threads


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def amp_dtype(name: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of `train.amp` (CUDA only; on CPU a warning and float32)."""
    if name not in AMP_DTYPES:
        raise ValueError(f"train.amp must be one of {sorted(AMP_DTYPES)}, got {name!r}")
    dtype = AMP_DTYPES[name]
    if dtype is not None and device.type != "cuda":
        logger.warning("train.amp=%s applies to CUDA only; training in float32", name)
    return dtype
