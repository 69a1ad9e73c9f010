"""Fixtures: tiny datasets with bad records (see data_builders.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from data_builders import coco_dataset, voc_year


@pytest.fixture
def coco_files(tmp_path: Path) -> dict[str, Any]:
    return coco_dataset(tmp_path / "coco")


@pytest.fixture
def voc_devkit(tmp_path: Path) -> Path:
    devkit = tmp_path / "VOCdevkit"
    voc_year(devkit, "2007", {
        "000001": (50, 40, [
            {"name": "dog", "bndbox": (11, 6, 30, 25)},
            {"name": "cat", "bndbox": (1, 1, 10, 10), "difficult": 1},
        ]),
        "000002": (30, 60, [
            {"name": "unicorn", "bndbox": (1, 1, 10, 10)},  # unknown class
            {"name": "person", "bndbox": (5, 5, 40, 70)},  # clipped to (4, 4, 30, 60)
            {"name": "person", "bndbox": (20, 20, 10, 30)},  # negative width
        ]),
        "000003": (20, 20, [
            {"name": "car"},  # no bndbox
        ]),
    })
    voc_year(devkit, "2012", {
        "2008_000001": (40, 30, [{"name": "bus", "bndbox": (2, 3, 20, 25)}]),
    })
    return devkit



@pytest.fixture(scope="session", autouse=True)
def index_cache_dir(tmp_path_factory) -> Iterator[Path]:
    """Parsed-index caches of these tests go to a temporary directory, not ~/.cache
    (session scope: module-scoped dataset fixtures are built before function fixtures)."""
    cache = tmp_path_factory.mktemp("index_cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RFCN_CACHE_DIR", str(cache))
        yield cache
