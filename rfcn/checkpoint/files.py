"""Checkpoint files: atomic writes and the temporaries a killed write leaves behind.

Keys written by the trainer: `model`, `model_spec` (the resolved architecture and settings,
rfcn.models.spec.RFCNSpec.to_dict: everything needed to rebuild the model), `weights_backbone`
(how the trunk was initialised, for the record), `optimizer`, `scheduler`, `scaler`,
`iteration`, `hooks` (best metric, patience, scalar history), `class_names`,
`label_to_cat_id`, `config` (resolved YAML string), `rng`, `format_version` (2; 1 had no
`model_spec`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from rfcn.utils.files import atomic_write, suppress_os_error

FORMAT_VERSION = 2


def save_checkpoint(state: dict[str, Any], path: str | os.PathLike[str]) -> None:
    """Write `state` to `path` atomically (rfcn.utils.files.atomic_write: temp file, fsync,
    `os.replace`): a crash at any moment leaves either the old or the new file."""
    atomic_write(path, lambda f: torch.save(state, f))


def remove_stale_temporaries(path: str | os.PathLike[str]) -> list[Path]:
    """Delete the temporary files `save_checkpoint(..., path)` leaves when killed mid-write
    (`.<name>.*.tmp` beside `path`); returns the removed paths. Call it before writing, from
    the one process that writes."""
    path = Path(path)
    removed = []
    for tmp in path.parent.glob(f".{path.name}.*.tmp"):
        with suppress_os_error():
            tmp.unlink()
            removed.append(tmp)
    return removed
