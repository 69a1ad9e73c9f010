"""Command-line keys checked against the schemas: `+key=value` adds a key in Hydra's grammar,
which a structured config would otherwise accept and ignore; here a key the schema does not
have is refused like a misspelt one, with the closest names."""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from typing import Any

from omegaconf import DictConfig, OmegaConf

from rfcn.config.schemas import DATASET_SCHEMAS

__all__ = ["ConfigError", "unknown_added_keys"]


class ConfigError(ValueError):
    """A bad key or value a user gave; the message is `<key>: <problem>`."""

    def __init__(self, key: str, problem: str) -> None:
        self.key = key
        self.problem = problem
        super().__init__(f"{key}: {problem}")


def _schema_node(schema: DictConfig, cfg: DictConfig, head: str) -> Any:
    if head == "dataset" and isinstance(cfg.get("dataset"), DictConfig):
        name = cfg.dataset.get("name")
        if name in DATASET_SCHEMAS:
            return OmegaConf.structured(DATASET_SCHEMAS[name])
    return schema.get(head) if head in schema else None


def _check_key(schema: DictConfig, cfg: DictConfig, key: str) -> str | None:
    """Why `key` is not in the schema (None when it is, or cannot be checked)."""
    parts = key.split(".")
    if parts[0] not in schema:
        return _unknown(parts[0], list(schema.keys()), "")
    node = _schema_node(schema, cfg, parts[0])
    for depth, part in enumerate(parts[1:], start=1):
        if not isinstance(node, DictConfig):
            return None  # a free-form value (Any): nothing to check against
        if part not in node:
            return _unknown(part, list(node.keys()), ".".join(parts[:depth]) + ".")
        node = node.get(part)
    return None


def _unknown(part: str, choices: list[Any], prefix: str) -> str:
    close = difflib.get_close_matches(part, [str(c) for c in choices], n=1)
    hint = f" (did you mean {prefix}{close[0]}?)" if close else ""
    return f"no such key{hint}"


def unknown_added_keys(cfg: DictConfig, overrides: Sequence[str], app_schema: type) -> None:
    """Raise ConfigError for the first `+key=value` of `overrides` that `app_schema` (the
    tool's dataclass) does not define."""
    schema = OmegaConf.structured(app_schema)
    for text in overrides:
        if not text.startswith("+"):
            continue
        key = text.lstrip("+").split("=", 1)[0].strip()
        if key.startswith("hydra."):
            continue
        problem = _check_key(schema, cfg, key)
        if problem is not None:
            raise ConfigError(key, problem)


def command_line_overrides() -> list[str]:
    """The overrides typed for this run (`key=value`, `+key=value`, `group=choice`), as Hydra
    parsed them; [] outside @hydra.main."""
    try:
        from hydra.core.hydra_config import HydraConfig

        return list(HydraConfig.get().overrides.task)
    except ValueError:  # not running under @hydra.main
        return []
