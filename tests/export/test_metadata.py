"""rfcn.export.metadata: what tools/export.py writes into a file reads back as it was."""

from __future__ import annotations

import json

import pytest

from rfcn.export.metadata import METADATA_KEYS, export_metadata, exported_classes


def test_class_names_and_category_ids_round_trip() -> None:
    names = ["__background__", "cat", "dog"]
    metadata = export_metadata(names, {1: 17, "2": 18}, {"builder": "rfcn_resnet18"})
    assert sorted(metadata) == sorted(METADATA_KEYS)
    assert all(isinstance(v, str) for v in metadata.values())
    assert exported_classes(metadata, "m.onnx") == (names, {1: 17, 2: 18})
    assert json.loads(metadata["rfcn_model_spec"]) == {"builder": "rfcn_resnet18"}


def test_no_category_ids() -> None:
    metadata = export_metadata(["__background__", "a"], None, {})
    assert exported_classes(metadata, "m.onnx") == (["__background__", "a"], {})
    del metadata["rfcn_label_to_cat_id"]
    assert exported_classes(metadata, "m.onnx")[1] == {}


@pytest.mark.parametrize("metadata", [{}, {"rfcn_class_names": ""}])
def test_a_file_without_class_names_is_refused(metadata: dict[str, str]) -> None:
    with pytest.raises(ValueError, match="m.pt2 carries no class names"):
        exported_classes(metadata, "m.pt2")
