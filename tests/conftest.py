"""Shared test configuration.

CUDA kernel tests (`@pytest.mark.cudasim`) need NUMBA_ENABLE_CUDASIM=1 set before numba is
imported, so they run in their own pytest process:

    NUMBA_ENABLE_CUDASIM=1 python -m pytest -m cudasim
"""

from __future__ import annotations

import os

import pytest

_CUDASIM = os.environ.get("NUMBA_ENABLE_CUDASIM") == "1"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        is_sim = item.get_closest_marker("cudasim") is not None
        if is_sim and not _CUDASIM:
            item.add_marker(pytest.mark.skip(reason="needs NUMBA_ENABLE_CUDASIM=1 (own process)"))
        elif not is_sim and _CUDASIM:
            item.add_marker(pytest.mark.skip(reason="simulator session runs cudasim tests only"))
