"""`train.resume=true hydra.run.dir=DIR` alone continues DIR's run as it was configured.

The run's configuration is the one its checkpoint stores (`config`, the resolved YAML); the
keys typed on this command line override it, and each override is reported. Keys that only
say where and how this process runs (`train.resume`, `output_dir`) are always today's.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from omegaconf import DictConfig, OmegaConf

from rfcn.config.schemas import TrainAppConfig, validate_dataset_config

logger = logging.getLogger(__name__)

__all__ = ["override_keys", "restore_run_config"]

# Sections of a training config that describe the run (restored from the checkpoint).
RUN_SECTIONS = ("dataset", "model", "solver", "train", "aug", "sizing")
_ALWAYS_TODAY = ("train.resume", "output_dir")


def override_keys(overrides: Sequence[str]) -> list[str]:
    """The config keys of command-line overrides (`a.b=1`, `+a.b=1`, `~a`, `group=choice`)."""
    keys = []
    for text in overrides:
        key = text.split("=", 1)[0].lstrip("+~").strip()
        if key and not key.startswith("hydra."):
            keys.append(key)
    return keys


def _typed(key: str, typed: Sequence[str]) -> bool:
    """`key` itself or a key above it was given on the command line."""
    return any(key == t or key.startswith(t + ".") for t in typed)


def _describe(value: Any) -> str:
    if isinstance(value, DictConfig) or OmegaConf.is_list(value):
        return str(OmegaConf.to_container(value, resolve=True, enum_to_str=True))
    return repr(getattr(value, "value", value))


def restore_run_config(
    cfg: DictConfig, saved_yaml: str, overrides: Sequence[str], source: str,
) -> tuple[DictConfig, list[str]]:
    """`cfg` with the run sections of the saved config, except what `overrides` (this
    command line) set. Returns the config and one line per overridden key that differs
    from the saved run ("train.max_iter: 40 -> 80")."""
    saved = OmegaConf.create(saved_yaml)
    typed = override_keys(overrides)
    if "experiment" in typed:
        logger.warning("train.resume with experiment=...: the run's configuration comes from "
                       "this command line, not from %s", source)
        return cfg, []
    restored = OmegaConf.create(OmegaConf.to_container(cfg, resolve=False))
    OmegaConf.set_struct(restored, False)
    for section in RUN_SECTIONS:
        if section in saved and section not in typed:
            restored[section] = saved[section]
    for key in [*typed, *_ALWAYS_TODAY]:
        if OmegaConf.select(cfg, key, default=None) is not None or key in typed:
            OmegaConf.update(restored, key, OmegaConf.select(cfg, key), merge=False,
                             force_add=True)
    changes = [
        f"{key}: {_describe(OmegaConf.select(saved, key))} -> "
        f"{_describe(OmegaConf.select(restored, key))}"
        for key in typed
        if key.split(".")[0] in RUN_SECTIONS and key not in _ALWAYS_TODAY
        and OmegaConf.select(saved, key) != OmegaConf.select(restored, key)
    ]
    dataset = validate_dataset_config(restored.pop("dataset"))
    result = OmegaConf.merge(OmegaConf.structured(TrainAppConfig), restored)
    result.dataset = dataset
    return result, changes
