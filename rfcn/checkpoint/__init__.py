"""Checkpoints: the one way to save, load and rebuild a model.

    from rfcn import checkpoint
    ckpt = checkpoint.load_checkpoint("runs/x/checkpoints/last.pt")  # weights_only=True
    model = checkpoint.rebuild_model(ckpt, "last.pt")  # the exact model it stores

- `save_checkpoint` / `remove_stale_temporaries` (files): atomic writes.
- `load_checkpoint`, `load_model_state`, `CheckpointError` (from rfcn.models.weights, where
  the builders' `weights=` argument uses them too): a safe load, and fitting a state dict to a
  model, naming what differs.
- `rebuild_model` (rfcn.models.builders.rfcn_from_checkpoint): the model a checkpoint stores,
  from its `model_spec`, with its weights.
- `capture_rng_state` / `restore_rng_state` (rng): what makes resume bit-exact.
- `check_classes`: a checkpoint and a dataset must agree on their classes.
"""

from __future__ import annotations

from rfcn.checkpoint.files import FORMAT_VERSION, remove_stale_temporaries, save_checkpoint
from rfcn.checkpoint.rng import capture_rng_state, restore_rng_state
from rfcn.models.builders import rfcn_from_checkpoint as rebuild_model
from rfcn.models.weights import (
    CheckpointError,
    StateDictDiff,
    diff_state_dicts,
    load_checkpoint,
    load_model_state,
)

__all__ = [
    "FORMAT_VERSION",
    "CheckpointError",
    "StateDictDiff",
    "capture_rng_state",
    "check_classes",
    "diff_state_dicts",
    "load_checkpoint",
    "load_model_state",
    "rebuild_model",
    "remove_stale_temporaries",
    "restore_rng_state",
    "save_checkpoint",
]


def check_classes(ckpt_classes: list[str], dataset_classes: list[str], where: str) -> None:
    """ValueError naming both class lists when a checkpoint and a dataset disagree."""
    if list(ckpt_classes) != list(dataset_classes):
        raise ValueError(
            f"{where}: the checkpoint's classes {list(ckpt_classes)[1:]} differ from the "
            f"dataset's {list(dataset_classes)[1:]}"
        )
