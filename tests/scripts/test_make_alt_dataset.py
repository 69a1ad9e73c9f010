"""scripts/make_alt_dataset.py writes a COCO-json dataset that rfcn's own reader accepts."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

from rfcn.data.coco import CocoDetection

REPO = Path(__file__).resolve().parents[2]


def _script():
    spec = importlib.util.spec_from_file_location("make_alt_dataset",
                                                  REPO / "scripts" / "make_alt_dataset.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_alt_dataset_is_valid_coco(tmp_path: Path) -> None:
    script = _script()
    script.main([str(tmp_path), "--num-train", "6", "--num-val", "3"])
    data = json.loads((tmp_path / "train.json").read_text())
    assert len(data["images"]) == 6 and len(data["annotations"]) >= 6
    for ann in data["annotations"]:
        x, y, w, h = ann["bbox"]
        img = data["images"][ann["image_id"] - 1]
        assert w > 0 and h > 0 and x >= 0 and y >= 0
        assert x + w <= img["width"] and y + h <= img["height"]
    ds = CocoDetection(str(tmp_path / "train"), str(tmp_path / "train.json"))
    assert list(ds.class_names)[1:] == list(script.CLASSES)
    assert len(ds) == 6
