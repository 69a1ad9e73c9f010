"""Thin helpers over torch.distributed: rank queries, object gathering, process-group setup.

Every helper works unchanged in a single process (no process group initialised).
"""

from __future__ import annotations

import logging
import os
from typing import Any

import torch
import torch.distributed as dist

logger = logging.getLogger(__name__)


def is_distributed() -> bool:
    """True when a process group is initialised with more than one process."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def get_rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def get_world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def is_main_process() -> bool:
    return get_rank() == 0


def barrier() -> None:
    if is_distributed():
        dist.barrier()


def all_gather_object(obj: Any) -> list[Any]:
    """Gather a picklable object from every rank; returns `[obj]` in a single process.

    The objects come from our own ranks over the process group (never from files), so
    pickling here is safe.
    """
    if not is_distributed():
        return [obj]
    gathered: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, obj)
    return gathered


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """Rank `src`'s object on every rank."""
    if not is_distributed():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def init_distributed(device: torch.device) -> bool:
    """Initialise the default process group when launched by torchrun (env `WORLD_SIZE` > 1).

    Uses nccl for CUDA devices and gloo otherwise. Returns True when a group was set up.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1 or dist.is_initialized():
        return dist.is_initialized()
    backend = "nccl" if device.type == "cuda" else "gloo"
    dist.init_process_group(backend=backend, **_restart_scoped_store())
    if dist.get_rank() > 0:  # one process reports (the run's log file is shared); others warn
        logging.getLogger("rfcn").setLevel(logging.WARNING)
    logger.info(
        "initialised process group: backend=%s rank=%d world_size=%d",
        backend,
        dist.get_rank(),
        dist.get_world_size(),
    )
    return True


def _restart_scoped_store() -> dict[str, Any]:
    """The env:// store, its keys prefixed by torchrun's restart count.

    Under torchrun the workers share the agent's TCPStore, which outlives a restart of the
    worker group (`--max-restarts`). Without a prefix, the restarted workers find the previous
    round's keys (gloo's peer addresses among them) and connect to dead processes. Outside
    torchrun (plain env:// variables) this is init_process_group's own store.
    """
    restart = os.environ.get("TORCHELASTIC_RESTART_COUNT")
    if restart is None:
        return {}
    store, rank, world_size = next(dist.rendezvous("env://"))
    store = dist.PrefixStore(f"rfcn/restart{restart}/", store)
    return {"store": store, "rank": rank, "world_size": world_size}


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0"))


def destroy_distributed() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def wrap_ddp(model: Any, device: torch.device, ims_per_batch: int) -> Any:
    """`model` in DistributedDataParallel under a process group (else `model` itself).

    BatchNorm: SyncBatchNorm on CUDA (statistics over the global batch); on CPU (gloo) each
    process normalises its own batch of `ims_per_batch` images, since torch's SyncBatchNorm
    runs on GPUs only.
    """
    if not is_distributed():
        return model
    from torch import nn

    if any(isinstance(m, nn.BatchNorm2d) for m in model.modules()):
        if device.type == "cuda":
            nn.SyncBatchNorm.convert_sync_batchnorm(model)
        else:
            logger.info("BatchNorm on CPU normalises each process's own batch of %d images "
                        "(SyncBatchNorm needs CUDA)", ims_per_batch)
    return nn.parallel.DistributedDataParallel(
        model, device_ids=[device.index] if device.type == "cuda" else None
    )
