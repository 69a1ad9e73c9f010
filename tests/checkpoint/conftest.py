"""The tiny training run the engine tests share (tests/engine/conftest.py)."""

from tests.engine.conftest import synthetic_cache, tiny_cfg, trained_run  # noqa: F401
