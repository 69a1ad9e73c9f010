"""Batch collation that keeps per-image values as lists (images differ in size)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

__all__ = ["collate_detection"]


def collate_detection(batch: Sequence[tuple[Any, Any]]) -> tuple[list[Any], list[Any]]:
    """``[(image, target), ...] -> ([image, ...], [target, ...])``."""
    images = [item[0] for item in batch]
    targets = [item[1] for item in batch]
    return images, targets
