"""Set up the process a run lives in: its device (cuda:LOCAL_RANK under torchrun), the
process group, the thread budget, the RNG seeds."""

from __future__ import annotations

import logging
import os
import random

import numpy as np
import torch

from rfcn.engine.distributed import init_distributed, local_rank

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


def configure_threads(num_threads: int | None, num_workers: int) -> int:
    """Intra-op threads: the requested number, else this process's share of the cores.

    Data workers mostly wait on JPEG decoding, so they are not subtracted; processes started
    by torchrun split the cores between them.
    """
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    cores = cores or 1
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    threads = num_threads or max(1, cores // local_world)
    # Numba's OpenMP threading layer resets torch's thread count when it starts (at the first
    # parallel PS RoI kernel): start it first, or train.num_threads would be silently undone.
    import numba

    numba.get_num_threads()
    torch.set_num_threads(threads)
    # OpenCV's thread pool does not survive fork(): a data worker forked while the pool is
    # live can deadlock in its first cv2 call. One OpenCV thread in the main process (it only
    # draws and, once, generates the synthetic data) keeps the pool from ever starting.
    import cv2

    cv2.setNumThreads(1)
    if threads * local_world > cores:
        logger.warning("%d threads x %d processes on %d cores: oversubscribed, expect slow steps",
                       threads, local_world, cores)
    logger.info("torch threads %d (cores %d, processes on this node %d, data workers %d per "
                "process)", threads, cores, local_world, num_workers)
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
