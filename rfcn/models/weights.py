"""Saved weights meeting a model: reading a checkpoint file safely, and fitting its state
dict to a model, naming every tensor that does not fit.

A checkpoint is a plain dict (tensors, numbers, strings, lists, dicts) so that it loads with
`torch.load(..., weights_only=True)`; a file carrying any other pickled object is refused
before any of its code can run. A file that is not a torch file at all (an image, a text
file) is reported as such. rfcn.checkpoint builds on these (saving, rebuilding a model).
"""

from __future__ import annotations

import logging
import os
import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

__all__ = [
    "CheckpointError",
    "StateDictDiff",
    "diff_state_dicts",
    "load_checkpoint",
    "load_model_state",
]

logger = logging.getLogger(__name__)

# torch.save writes a zip archive; files of torch < 1.6 (and `_use_new_zipfile_serialization=
# False`) are a bare pickle, which starts with the PROTO opcode.
_ZIP_MAGIC = b"PK\x03\x04"
_PICKLE_PROTO = 0x80
_KNOWN_FORMATS = (
    (b"\xff\xd8\xff", "a JPEG image"), (b"\x89PNG", "a PNG image"), (b"GIF8", "a GIF image"),
    (b"BM", "a BMP image"), (b"{", "a JSON file"), (b"\x08", "an ONNX model"),
)


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be used: unsafe, corrupt, not a checkpoint, or incompatible."""


def _not_a_torch_file(path: Path) -> str | None:
    """Why `path` is not a torch file (None when it may be one)."""
    with open(path, "rb") as f:
        head = f.read(8)
    if not head:
        return "it is empty"
    if head.startswith(_ZIP_MAGIC) or head[0] == _PICKLE_PROTO:
        return None
    for magic, kind in _KNOWN_FORMATS:
        if head.startswith(magic):
            return f"it is {kind}"
    return "it is not a file written by torch.save"


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
    reason = _not_a_torch_file(path)
    if reason is not None:
        raise CheckpointError(f"{path} is not a checkpoint: {reason} (expected a .pt file "
                              "written by tools/train.py)")
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
