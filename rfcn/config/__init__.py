"""Structured-config schemas (registered in Hydra's ConfigStore) and the conversions of a
composed config to plain data. Nothing here builds an object: rfcn.assembly does that.

This package is the only library code that knows Hydra / OmegaConf (the schemas are in
`rfcn.config.schemas`). Every schema is a dataclass and
every choice an Enum, so a misspelt key (`train.max_itr=3`), a wrongly typed value or an
unknown choice (`solver.optimizer=adam`) fails at composition, naming the key and the choices.
Constructors elsewhere in rfcn receive numbers and built objects, never a config.

Config groups: `model/` (rfcn_r18, rfcn_r50, rfcn_r101), `dataset/` (synthetic, coco, voc,
coco_json), `solver/` (default, voc_paper, coco_paper), `experiment/` (paper settings).
"""

from __future__ import annotations

import logging
import os
from enum import Enum
from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, OmegaConf

from rfcn.config.overrides import ConfigError, command_line_overrides, unknown_added_keys
from rfcn.config.resume import override_keys, restore_run_config
from rfcn.config.schemas import (
    DATASET_SCHEMAS,
    Amp,
    AugConfig,
    BenchmarkAppConfig,
    BoxNms,
    BrowseAppConfig,
    CocoDatasetConfig,
    CocoJsonDatasetConfig,
    DatasetConfig,
    EvalAppConfig,
    ExportAppConfig,
    ExportFormat,
    InferAppConfig,
    ModelConfig,
    Norm,
    Optimizer,
    PsOp,
    Runtime,
    Schedule,
    SizingConfig,
    SolverConfig,
    Split,
    SplitConfig,
    SyntheticDatasetConfig,
    TestConfig,
    TrainAppConfig,
    TrainConfig,
    VOCDatasetConfig,
    validate_dataset_config,
)

logger = logging.getLogger(__name__)

def _from_scratch(weights_backbone: Any, value: Any) -> Any:
    """`${rfcn.from_scratch:${.weights_backbone},VALUE}`: VALUE for a trunk trained from
    scratch, None (the builder's pretrained default) when it starts from ImageNet weights."""
    return None if weights_backbone else value


OmegaConf.register_new_resolver("rfcn.from_scratch", _from_scratch, replace=True)
# `${rfcn.parent:${output}}`: the folder of an output file (tools/export.py logs there).
OmegaConf.register_new_resolver(
    "rfcn.parent", lambda path: str(Path(os.path.expanduser(str(path))).parent), replace=True)


def register_configs() -> None:
    """Register the schemas; config files name them in their defaults lists.

    The group schemas live under `schema/` (e.g. `/schema/model@_here_`), not in the groups
    themselves: a group in the ConfigStore makes `<group>=...` a group override for every
    tool, and tools/infer.py's `model=FILE` must stay a plain key."""
    cs = ConfigStore.instance()
    cs.store(name="train_schema", node=TrainAppConfig)
    cs.store(name="eval_schema", node=EvalAppConfig)
    cs.store(name="infer_schema", node=InferAppConfig)
    cs.store(name="export_schema", node=ExportAppConfig)
    cs.store(name="browse_schema", node=BrowseAppConfig)
    cs.store(name="benchmark_schema", node=BenchmarkAppConfig)
    cs.store(group="schema", name="model", node=ModelConfig)
    cs.store(group="schema", name="solver", node=SolverConfig)
    cs.store(group="schema", name="synthetic", node=SyntheticDatasetConfig)
    cs.store(group="schema", name="coco", node=CocoDatasetConfig)
    cs.store(group="schema", name="coco_json", node=CocoJsonDatasetConfig)
    cs.store(group="schema", name="voc", node=VOCDatasetConfig)


register_configs()

# ---- conversions ------------------------------------------------------------------------------


def plain(node: Any) -> Any:
    """A config node as plain containers (choices as their names), for constructors."""
    if isinstance(node, DictConfig) or OmegaConf.is_list(node):
        return OmegaConf.to_container(node, resolve=True, enum_to_str=True)
    if isinstance(node, Enum):
        return node.value
    return node


def to_yaml(cfg: DictConfig) -> str:
    """The resolved config as YAML (stored in checkpoints)."""
    return OmegaConf.to_yaml(cfg, resolve=True)


def from_yaml(text: str) -> DictConfig:
    return OmegaConf.create(text)


def model_kwargs(model_cfg: Any) -> dict[str, Any]:
    """The model node's builder options: every set field except name / weights /
    weights_backbone, as plain values."""
    values = plain(model_cfg)
    assert isinstance(values, dict)
    skip = {"name", "weights", "weights_backbone"}
    return {k: v for k, v in values.items() if k not in skip and v is not None}


def resolve_output_dir(cfg: DictConfig) -> Path:
    """`cfg.output_dir`, else Hydra's run dir when running under Hydra, else the cwd."""
    if cfg.get("output_dir"):
        return Path(os.path.expanduser(str(cfg.output_dir)))
    try:
        from hydra.core.hydra_config import HydraConfig

        return Path(HydraConfig.get().runtime.output_dir)
    except ValueError:  # not running under @hydra.main
        return Path.cwd()


__all__ = [
    "Amp",
    "AugConfig",
    "BenchmarkAppConfig",
    "BoxNms",
    "BrowseAppConfig",
    "CocoDatasetConfig",
    "ConfigError",
    "CocoJsonDatasetConfig",
    "DATASET_SCHEMAS",
    "DatasetConfig",
    "EvalAppConfig",
    "ExportAppConfig",
    "ExportFormat",
    "InferAppConfig",
    "ModelConfig",
    "Norm",
    "Optimizer",
    "PsOp",
    "Runtime",
    "Schedule",
    "SizingConfig",
    "SolverConfig",
    "Split",
    "SplitConfig",
    "SyntheticDatasetConfig",
    "TestConfig",
    "TrainAppConfig",
    "TrainConfig",
    "VOCDatasetConfig",
    "command_line_overrides",
    "from_yaml",
    "model_kwargs",
    "override_keys",
    "plain",
    "register_configs",
    "resolve_output_dir",
    "restore_run_config",
    "to_yaml",
    "unknown_added_keys",
    "validate_dataset_config",
]
