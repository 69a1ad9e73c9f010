"""tools/convert.py run as a user runs it (subprocess, real Hydra CLI)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[2]


def _convert(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO / "tools" / "convert.py"), *args],
                          cwd=cwd, capture_output=True, text=True, timeout=120)


def _voc_folder(root: Path, n: int) -> None:
    """n 16x16 images, each with one 'cat' box and, for the first, a box reaching outside."""
    root.mkdir(parents=True)
    for i in range(n):
        assert cv2.imwrite(str(root / f"{i}.jpg"), np.zeros((16, 16, 3), np.uint8))
        extra = "<object><name>dog</name><bndbox><xmin>9</xmin><ymin>9</ymin><xmax>40</xmax>" \
                "<ymax>12</ymax></bndbox></object>" if i == 0 else ""
        (root / f"{i}.xml").write_text(
            f"<annotation><filename>{i}.jpg</filename><size><width>16</width>"
            "<height>16</height><depth>3</depth></size><object><name>cat</name><difficult>0"
            "</difficult><bndbox><xmin>2</xmin><ymin>3</ymin><xmax>8</xmax><ymax>10</ymax>"
            f"</bndbox></object>{extra}</annotation>")


def test_convert_voc_cli(tmp_path: Path) -> None:
    _voc_folder(tmp_path / "voc", 5)
    out = tmp_path / "coco"
    proc = _convert("from=voc", "input=voc", "output=coco", "val_fraction=0.4", "seed=1",
                    cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    train, val = (json.loads((out / f"{s}.json").read_text()) for s in ("train", "val"))
    assert (len(train["images"]), len(val["images"])) == (3, 2)
    assert [c["name"] for c in train["categories"]] == ["cat", "dog"]
    report = json.loads((out / "convert_report.json").read_text())
    assert report["counts"] == {"clipped: reaching outside the image": 1}
    assert report["img_dir"] == str((tmp_path / "voc").resolve())
    assert "0.xml: object 2 'dog': clipped (reaching outside the image)" in proc.stdout
    expected = (f"python tools/train.py dataset=coco_json dataset.train.ann_file={out}/train.json"
                f" dataset.train.img_dir={tmp_path / 'voc'} dataset.val.ann_file={out}/val.json"
                f" dataset.val.img_dir={tmp_path / 'voc'}")
    assert expected in proc.stdout


def test_convert_cli_errors(tmp_path: Path) -> None:
    _voc_folder(tmp_path / "voc", 1)
    proc = _convert("from=pascal", "input=voc", "output=coco", cwd=tmp_path)
    assert proc.returncode != 0
    assert "unknown format 'pascal': expected one of voc, yolo, labelme" in proc.stderr
    proc = _convert("from=voc", "input=voc", "output=coco", "val_fracton=0.2", cwd=tmp_path)
    assert proc.returncode != 0 and "val_fracton" in proc.stderr  # struct mode: a typo fails
    proc = _convert("input=voc", "output=coco", cwd=tmp_path)
    assert proc.returncode != 0 and "missing from=" in proc.stderr
