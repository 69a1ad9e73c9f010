"""Stopping a training run on request: SIGINT (Ctrl-C) and SIGTERM (what SLURM, Kubernetes and
torchrun send before they stop a job) finish the current iteration, save a checkpoint there
and end the run with `TrainingInterrupted`; a second SIGINT ends it at once.

The handlers only set a flag, read by the trainer between iterations; under DDP every rank
learns the flag of every other (one all-reduce per step), so all ranks stop after the same
iteration and save together (rank 0 writes). Data-loader workers are forked with the same
Python handler, so a Ctrl-C that reaches the whole process group does not kill them.
"""

from __future__ import annotations

import logging
import signal
import threading
from types import FrameType
from typing import Any

import torch

from rfcn.utils.distributed import is_distributed

logger = logging.getLogger(__name__)

__all__ = ["EXIT_CODES", "StopRequest", "TrainingInterrupted"]

# The exit status a shell reports for a process ended by the signal (128 + its number).
EXIT_CODES = {signal.SIGINT: 130, signal.SIGTERM: 143}


class TrainingInterrupted(Exception):  # noqa: N818  (a stop, not an error)
    """A signal stopped training; the checkpoint of `iteration` is at `checkpoint` (None when
    nothing could be saved)."""

    def __init__(self, signum: int, iteration: int, checkpoint: Any) -> None:
        self.signum = signum
        self.iteration = iteration
        self.checkpoint = checkpoint
        name = signal.Signals(signum).name
        where = f"saved {checkpoint}" if checkpoint else "no checkpoint saved"
        super().__init__(f"{name} at iteration {iteration}: {where}")

    @property
    def exit_code(self) -> int:
        return EXIT_CODES.get(signal.Signals(self.signum), 128 + int(self.signum))


class StopRequest:
    """Context manager: while active, SIGINT / SIGTERM set `signum` instead of ending the
    process; a second SIGINT raises KeyboardInterrupt at once. Outside the main thread (where
    Python cannot install handlers) it does nothing."""

    def __init__(self, signals: tuple[int, ...] = (signal.SIGINT, signal.SIGTERM)) -> None:
        self.signals = signals
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> StopRequest:
        if threading.current_thread() is threading.main_thread():
            for sig in self.signals:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: Any) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.signum is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt  # second Ctrl-C: stop now, no checkpoint
        if self.signum is None:
            self.signum = signum
            logger.warning("%s received: stopping after this iteration (a checkpoint is "
                           "saved; Ctrl-C again to stop at once)", signal.Signals(signum).name)

    def agreed(self, device: torch.device) -> int | None:
        """The signal any rank received (the same answer on every rank), or None."""
        if not is_distributed():
            return self.signum
        flag = torch.tensor([float(self.signum or 0)], device=device)
        torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
        return int(flag.item()) or None
