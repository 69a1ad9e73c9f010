"""The metadata an exported file carries (ONNX metadata_props, .pt2 extra files): the class
names, the label -> category id map and the model spec, as JSON strings. Written by
tools/export.py, read back wherever an exported file is opened for inference."""

from __future__ import annotations

import json
from typing import Any

METADATA_KEYS = ["rfcn_class_names", "rfcn_label_to_cat_id", "rfcn_model_spec"]


def export_metadata(class_names: list[str], label_to_cat_id: dict[Any, Any] | None,
                    spec: dict[str, Any]) -> dict[str, str]:
    """The strings under `METADATA_KEYS` for a model with these classes and spec (a dict)."""
    return {
        "rfcn_class_names": json.dumps(list(class_names)),
        "rfcn_label_to_cat_id": json.dumps(
            {str(k): int(v) for k, v in (label_to_cat_id or {}).items()}),
        "rfcn_model_spec": json.dumps(spec),
    }


def exported_classes(metadata: dict[str, str], source: str) -> tuple[list[str], dict[int, int]]:
    """Class names and label -> category id of an exported file (written by `export_metadata`);
    `source` names the file in the error when it carries no class names."""
    if not metadata.get("rfcn_class_names"):
        raise ValueError(f"{source} carries no class names: export it with tools/export.py")
    names = json.loads(metadata["rfcn_class_names"])
    ids = {int(k): int(v) for k, v in json.loads(metadata.get("rfcn_label_to_cat_id") or "{}")
           .items()}
    return names, ids
