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
    assert "from=voc|yolo|labelme" in proc.stderr  # the choices


def _xml(name: str) -> str:
    return (f"<annotation><folder>images</folder><filename>{name}.jpg</filename><size><width>"
            "32</width><height>24</height><depth>3</depth></size><object><name>cat</name>"
            "<bndbox><xmin>2</xmin><ymin>3</ymin><xmax>8</xmax><ymax>10</ymax></bndbox>"
            "</object></annotation>")


def _labelimg(root: Path, names: list[str], images: Path | None = None) -> None:
    """labelImg's layout: root/annots/x.xml, images (default root/images)/x.jpg."""
    images = images or root / "images"
    images.mkdir(parents=True)
    (root / "annots").mkdir(parents=True)
    for name in names:
        assert cv2.imwrite(str(images / f"{name}.jpg"), np.zeros((24, 32, 3), np.uint8))
        (root / "annots" / f"{name}.xml").write_text(_xml(name))


def test_convert_labelimg_layout_names_the_truncated_image(tmp_path: Path) -> None:
    _labelimg(tmp_path / "photos", ["a", "b", "cut"])
    noise = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    data = cv2.imencode(".jpg", noise)[1].tobytes()
    (tmp_path / "photos" / "images" / "cut.jpg").write_bytes(data[: len(data) // 2])
    proc = _convert("from=voc", "input=photos", "output=coco", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "all: 2 images, 2 boxes" in proc.stdout
    assert "1 files skipped (not in the output): 1 truncated image" in proc.stdout
    assert ("annots/cut.xml: image images/cut.jpg: truncated JPEG file (no end-of-image "
            "marker): skipped (truncated image)") in proc.stdout
    assert f"dataset.train.img_dir={tmp_path / 'photos'}" in proc.stdout


def test_convert_cli_failure_prints_first_reasons_and_img_dir_hint(tmp_path: Path) -> None:
    _labelimg(tmp_path / "photos", [f"{i}" for i in range(7)],
              images=tmp_path / "mnt" / "disk" / "backup" / "jpg")
    proc = _convert("from=voc", "input=photos", "output=coco", cwd=tmp_path)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert proc.stderr.startswith(f"error: {tmp_path / 'photos'}: no usable image (7 problems")
    reasons = [ln for ln in proc.stderr.splitlines() if "skipped (image file not found)" in ln]
    assert len(reasons) == 5 and reasons[0].startswith("  annots/0.xml: no image 0.* ")
    assert "  ... and 2 more" in proc.stderr
    assert "hint: pass img_dir=DIR to say where the images are" in proc.stderr
    proc = _convert("from=voc", "input=photos", "output=coco", "img_dir=mnt", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "all: 7 images, 7 boxes" in proc.stdout


def test_convert_help_lists_its_keys(tmp_path: Path) -> None:
    proc = _convert("--help", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for key in ("from=voc|yolo|labelme", "input=PATH", "output=DIR", "img_dir=DIR",
                "classes=[a,b]", "val_fraction=F", "seed=N", "(default: 0.0",
                "python tools/convert.py from=voc input=photos"):
        assert key in proc.stdout, key
    assert "Configuration groups" not in proc.stdout and "solver" not in proc.stdout
