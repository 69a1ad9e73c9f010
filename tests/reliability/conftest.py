"""Fixtures for the reliability tests (helpers live in run_tools.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from .run_tools import SYNTH


@pytest.fixture(scope="session")
def synth_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny synthetic dataset, generated once (before any concurrent subprocess)."""
    from rfcn.data.synthetic import ensure_synthetic_dataset

    cache = tmp_path_factory.mktemp("rel-synthetic")
    ensure_synthetic_dataset(cache, **SYNTH)
    return cache
