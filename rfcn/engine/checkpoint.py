"""Checkpoints: atomic writes, weights-only loads, RNG state capture, shape-matching loads.

A checkpoint is a plain dict (tensors, numbers, strings, lists, dicts) so that it loads with
`torch.load(..., weights_only=True)`; a file carrying any other pickled object is refused
before any of its code can run.

Keys written by the trainer: `model`, `model_spec` (the resolved architecture and settings,
rfcn.models.spec.RFCNSpec.to_dict: everything needed to rebuild the model), `weights_backbone`
(how the trunk was initialised, for the record), `optimizer`, `scheduler`, `scaler`,
`iteration`, `hooks` (best metric, patience, scalar history), `class_names`,
`label_to_cat_id`, `config` (resolved YAML string), `rng`, `format_version` (2; 1 had no
`model_spec`).
"""

from __future__ import annotations

import logging
import os
import pickle
import random
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

logger = logging.getLogger(__name__)

FORMAT_VERSION = 2


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be used: unsafe, corrupt or incompatible."""


def save_checkpoint(state: dict[str, Any], path: str | os.PathLike[str]) -> None:
    """Write `state` to `path` atomically.

    The bytes go to a temporary file in the same directory, are flushed and fsynced, then
    `os.replace` swaps it in: a crash at any moment leaves either the old or the new file,
    never a torn one.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        with _suppress_os_error():
            os.unlink(tmp_name)
        raise
    with _suppress_os_error():
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def remove_stale_temporaries(path: str | os.PathLike[str]) -> list[Path]:
    """Delete the temporary files `save_checkpoint(..., path)` leaves when killed mid-write
    (`.<name>.*.tmp` beside `path`); returns the removed paths. Call it before writing, from
    the one process that writes."""
    path = Path(path)
    removed = []
    for tmp in path.parent.glob(f".{path.name}.*.tmp"):
        with _suppress_os_error():
            tmp.unlink()
            removed.append(tmp)
    return removed


class _suppress_os_error:
    def __enter__(self) -> None:
        return None

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> bool:
        return exc_type is not None and issubclass(exc_type, OSError)


def load_checkpoint(path: str | os.PathLike[str], map_location: str | torch.device = "cpu") -> dict:
    """Load a checkpoint with `torch.load(weights_only=True)`.

    Raises:
        FileNotFoundError: no such file.
        CheckpointError: the file holds arbitrary pickled objects (refused, nothing executed),
            is corrupt, or is not an rfcn checkpoint dict with a `model` entry.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        raise CheckpointError(
            f"refusing to load {path}: it contains pickled objects other than tensors and "
            "plain containers (it could run code when unpickled). Only weights-only "
            f"checkpoints are accepted. Loader said: {str(e).splitlines()[0]}"
        ) from None
    except Exception as e:  # a corrupt file can fail anywhere in the unpickler (IndexError ...)
        raise CheckpointError(f"cannot read checkpoint {path} (corrupt or not a torch file): "
                              f"{type(e).__name__}: {e}") from e
    if not isinstance(state, dict) or "model" not in state:
        kind = type(state).__name__
        raise CheckpointError(
            f"{path} is not an rfcn checkpoint (expected a dict with a 'model' entry, got {kind})"
        )
    return state


# ---- RNG state -------------------------------------------------------------------------------


def capture_rng_state() -> dict[str, Any]:
    """torch (CPU, CUDA), numpy and python RNG states as tensors and plain values."""
    np_state = np.random.get_state()
    py_version, py_internal, py_gauss = random.getstate()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "name": str(np_state[0]),
            "keys": torch.from_numpy(np.asarray(np_state[1], dtype=np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached_gaussian": float(np_state[4]),
        },
        "python": {
            "version": int(py_version),
            "internal": torch.tensor(py_internal, dtype=torch.int64),
            "gauss_next": py_gauss,
        },
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    """Inverse of `capture_rng_state`."""
    torch.set_rng_state(state["torch"].cpu())
    np_state = state["numpy"]
    np.random.set_state(
        (
            np_state["name"],
            np_state["keys"].numpy().astype(np.uint32),
            np_state["pos"],
            np_state["has_gauss"],
            np_state["cached_gaussian"],
        )
    )
    py = state["python"]
    random.setstate(
        (py["version"], tuple(int(v) for v in py["internal"].tolist()), py["gauss_next"])
    )
    if "cuda" in state and torch.cuda.is_available():
        cuda_states = [s.cpu() for s in state["cuda"]]
        if len(cuda_states) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda_states)
        else:
            logger.warning(
                "checkpoint has %d CUDA RNG states, this machine %d devices: not restored",
                len(cuda_states),
                torch.cuda.device_count(),
            )


# ---- model weights -------------------------------------------------------------------------


@dataclass
class StateDictDiff:
    """How a checkpoint's state dict differs from a model's."""

    missing: list[str] = field(default_factory=list)  # in the model, not in the checkpoint
    unexpected: list[str] = field(default_factory=list)  # in the checkpoint, not in the model
    shape_mismatch: dict[str, tuple[tuple[int, ...], tuple[int, ...]]] = field(
        default_factory=dict
    )  # name → (checkpoint shape, model shape)

    @property
    def identical(self) -> bool:
        return not (self.missing or self.unexpected or self.shape_mismatch)

    def describe(self, limit: int = 8) -> str:
        parts = []

        def names(keys: list[str]) -> str:
            more = f", ... ({len(keys) - limit} more)" if len(keys) > limit else ""
            return ", ".join(keys[:limit]) + more

        if self.missing:
            parts.append(
                f"{len(self.missing)} model tensors missing from the checkpoint: "
                f"{names(self.missing)}"
            )
        if self.unexpected:
            parts.append(
                f"{len(self.unexpected)} checkpoint tensors unknown to the model: "
                f"{names(self.unexpected)}"
            )
        if self.shape_mismatch:
            items = [f"{k} {tuple(a)} vs {tuple(b)}" for k, (a, b) in self.shape_mismatch.items()]
            parts.append(f"{len(items)} shape mismatches (checkpoint vs model): {names(items)}")
        return "; ".join(parts) if parts else "identical"


def diff_state_dicts(
    model_state: dict[str, Tensor], ckpt_state: dict[str, Tensor]
) -> StateDictDiff:
    diff = StateDictDiff()
    diff.missing = [k for k in model_state if k not in ckpt_state]
    diff.unexpected = [k for k in ckpt_state if k not in model_state]
    for k, v in model_state.items():
        if k in ckpt_state and tuple(ckpt_state[k].shape) != tuple(v.shape):
            diff.shape_mismatch[k] = (tuple(ckpt_state[k].shape), tuple(v.shape))
    return diff


def _strip_ddp_prefix(state: dict[str, Tensor]) -> dict[str, Tensor]:
    if state and all(k.startswith("module.") for k in state):
        return {k[len("module.") :]: v for k, v in state.items()}
    return state


def load_model_state(
    model: nn.Module,
    checkpoint: dict[str, Any],
    *,
    allow_class_change: bool = False,
    architecture: str | None = None,
    source: str = "checkpoint",
) -> StateDictDiff:
    """Copy a checkpoint's weights into `model`.

    Exact loads (resume, eval) require identical names and shapes. With
    `allow_class_change=True` (fine-tuning), tensors whose shape differs keep the model's
    fresh initialisation, provided the checkpoint's class count differs from the model's,
    and each one is logged; missing or unexpected tensors are always an error, since they mean
    another architecture.

    Raises:
        CheckpointError: naming what differs (architecture, class count, tensors).
    """
    ckpt_state = _strip_ddp_prefix(checkpoint["model"])
    model_state = model.state_dict()
    diff = diff_state_dicts(model_state, ckpt_state)
    ckpt_classes = len(checkpoint.get("class_names") or []) or None
    model_classes = getattr(model, "num_classes", None)
    arch = _architecture(checkpoint)
    arch_note = ""
    if arch and architecture and arch != architecture:
        arch_note = f" (the checkpoint is a {arch}, the model a {architecture})"
    elif arch:
        arch_note = f" (checkpoint architecture: {arch})"
    if diff.missing or diff.unexpected:
        raise CheckpointError(f"{source} does not fit this model{arch_note}: {diff.describe()}")
    if diff.shape_mismatch:
        _check_class_change(diff, ckpt_classes, model_classes, allow_class_change, source,
                            arch_note)
    to_load = {k: v for k, v in ckpt_state.items() if k not in diff.shape_mismatch}
    merged = dict(model_state)
    merged.update(to_load)
    model.load_state_dict(merged, strict=True)
    return diff


def _check_class_change(
    diff: StateDictDiff,
    ckpt_classes: int | None,
    model_classes: int | None,
    allow_class_change: bool,
    source: str,
    arch_note: str,
) -> None:
    """Shape mismatches are fine only when fine-tuning to another class count (logged)."""
    class_change = (ckpt_classes is not None and model_classes is not None
                    and ckpt_classes != model_classes)
    if not (allow_class_change and class_change):
        classes = (
            f" The checkpoint has {ckpt_classes} classes, the model {model_classes}."
            if ckpt_classes is not None and model_classes is not None
            else ""
        )
        hint = " Use model.weights=... to fine-tune with another class count." if class_change \
            else ""
        raise CheckpointError(
            f"{source} does not fit this model{arch_note}: {diff.describe()}.{classes}{hint}"
        )
    for k, (ckpt_shape, model_shape) in diff.shape_mismatch.items():
        logger.info(
            "fine-tuning: re-initialised %s (checkpoint %s, model %s): class count %d -> %d",
            k, ckpt_shape, model_shape, ckpt_classes, model_classes,
        )


def _architecture(checkpoint: dict[str, Any]) -> str | None:
    arch = checkpoint.get("architecture")
    return str(arch) if arch else None


def check_classes(ckpt_classes: list[str], dataset_classes: list[str], where: str) -> None:
    """ValueError naming both class lists when a checkpoint and a dataset disagree."""
    if list(ckpt_classes) != list(dataset_classes):
        raise ValueError(
            f"{where}: the checkpoint's classes {list(ckpt_classes)[1:]} differ from the "
            f"dataset's {list(dataset_classes)[1:]}"
        )
