"""Builders of tiny COCO-format and VOC-format datasets (OpenCV, into tmp_path), with every
kind of bad record the readers must survive. Fixtures using them are in conftest.py."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import cv2
import numpy as np

# Colours are RGB; OpenCV writes BGR.
RED = (255, 0, 0)


def write_rgb(path: Path, img: np.ndarray) -> None:
    """Write an HxWx3 RGB uint8 image (BGR on disk)."""
    assert cv2.imwrite(str(path), cv2.cvtColor(img, cv2.COLOR_RGB2BGR))


def rect_image(h: int, w: int, box: tuple[int, int, int, int], color=RED) -> np.ndarray:
    """Black RGB image with a filled rectangle covering pixel columns x1..x2-1, rows y1..y2-1
    (so its continuous box is exactly ``box``)."""
    img = np.zeros((h, w, 3), np.uint8)
    x1, y1, x2, y2 = box
    img[y1:y2, x1:x2] = color
    return img


def coco_dataset(root: Path) -> dict[str, Any]:
    """Writes images and ``ann.json`` under root; returns a description for the tests."""
    img_dir = root / "images"
    img_dir.mkdir(parents=True)
    write_rgb(img_dir / "good.jpg", rect_image(48, 64, (10, 8, 30, 28)))
    write_rgb(img_dir / "empty.png", rect_image(40, 40, (0, 0, 0, 0)))
    write_rgb(img_dir / "portrait.png", rect_image(60, 30, (5, 5, 25, 50)))
    gray = np.full((20, 24), 100, np.uint8)
    cv2.imwrite(str(img_dir / "gray.png"), gray)
    bgra = np.zeros((20, 24, 4), np.uint8)
    bgra[..., 0], bgra[..., 1], bgra[..., 2], bgra[..., 3] = 10, 20, 200, 128  # B, G, R, A
    cv2.imwrite(str(img_dir / "rgba.png"), bgra)
    g16 = np.zeros((20, 24, 3), np.uint16)
    g16[..., 2] = 65535  # red channel full (BGR on disk)
    g16[..., 1] = 32896  # ~ 128 in 8 bits
    cv2.imwrite(str(img_dir / "deep16.png"), g16)
    ok, buf = cv2.imencode(".jpg", np.full((32, 32, 3), 77, np.uint8))
    data = buf.tobytes()
    (img_dir / "truncated.jpg").write_bytes(data[: len(data) // 2])
    (img_dir / "notimage.jpg").write_text("this is not an image\n")
    write_rgb(img_dir / "wrongsize.png", rect_image(10, 10, (0, 0, 0, 0)))

    images = [
        {"id": 1, "file_name": "good.jpg", "width": 64, "height": 48},
        {"id": 2, "file_name": "empty.png", "width": 40, "height": 40},
        {"id": 3, "file_name": "portrait.png", "width": 30, "height": 60},
        {"id": 4, "file_name": "gray.png", "width": 24, "height": 20},
        {"id": 5, "file_name": "rgba.png", "width": 24, "height": 20},
        {"id": 6, "file_name": "deep16.png", "width": 24, "height": 20},
        {"id": 7, "file_name": "truncated.jpg", "width": 32, "height": 32},
        {"id": 8, "file_name": "notimage.jpg", "width": 32, "height": 32},
        {"id": 9, "file_name": "missing.jpg", "width": 32, "height": 32},
        {"id": 10, "file_name": "wrongsize.png", "width": 20, "height": 20},
        {"id": 11, "file_name": "zerosize.png", "width": 0, "height": 20},
    ]
    categories = [{"id": 7, "name": "dog"}, {"id": 3, "name": "cat"}]
    anns = [
        # good: dog box on good.jpg, exactly the drawn rectangle
        {"id": 1, "image_id": 1, "category_id": 7, "bbox": [10, 8, 20, 20], "area": 400,
         "iscrowd": 0},
        # crowd cat
        {"id": 2, "image_id": 1, "category_id": 3, "bbox": [40, 30, 10, 10], "area": 100,
         "iscrowd": 1},
        # reaches outside: clipped to [50, 40, 64, 48]
        {"id": 3, "image_id": 1, "category_id": 3, "bbox": [50, 40, 30, 30], "area": 900,
         "iscrowd": 0},
        {"id": 4, "image_id": 1, "category_id": 3, "bbox": [5, 5, 0, 10]},  # zero width
        {"id": 5, "image_id": 1, "category_id": 3, "bbox": [5, 5, 10, -3]},  # negative
        {"id": 6, "image_id": 1, "category_id": 3, "bbox": [math.nan, 5, 10, 10]},  # NaN
        {"id": 7, "image_id": 1, "category_id": 3, "bbox": [100, 100, 10, 10]},  # outside
        {"id": 8, "image_id": 99, "category_id": 3, "bbox": [1, 1, 5, 5]},  # unknown image
        {"id": 9, "image_id": 1, "category_id": 42, "bbox": [1, 1, 5, 5]},  # unknown category
        {"id": 10, "image_id": 1, "category_id": 3, "bbox": [1, 1, 5]},  # malformed bbox
        {"id": 11, "image_id": 3, "category_id": 3, "bbox": [5, 5, 20, 45]},  # portrait cat
        {"id": 12, "image_id": 4, "category_id": 7, "bbox": [1, 1, 10, 10]},
        {"id": 13, "image_id": 7, "category_id": 7, "bbox": [1, 1, 10, 10]},
        {"id": 14, "image_id": 11, "category_id": 7, "bbox": [1, 1, 10, 10]},  # dropped image
        {"image_id": 5, "category_id": 7, "bbox": [2, 2, 10, 10]},  # no id, no area
    ]
    ann_file = root / "ann.json"
    ann_file.write_text(json.dumps({"images": images, "annotations": anns,
                                    "categories": categories}))
    return {"img_dir": img_dir, "ann_file": ann_file}


def good_coco_dataset(root: Path, sizes: list[tuple[int, int]]) -> tuple[Path, Path]:
    """Readable images of the given (h, w) with one random box each; returns (img_dir, ann)."""
    img_dir = root / "images"
    img_dir.mkdir(parents=True)
    rng = np.random.default_rng(0)
    images, anns = [], []
    for i, (h, w) in enumerate(sizes):
        img = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        write_rgb(img_dir / f"{i}.png", img)
        images.append({"id": i + 1, "file_name": f"{i}.png", "width": w, "height": h})
        anns.append({"id": i + 1, "image_id": i + 1, "category_id": 1 + i % 2,
                     "bbox": [1, 2, w // 2, h // 2], "area": 1.0, "iscrowd": int(i % 5 == 4)})
    ann_file = root / "ann.json"
    ann_file.write_text(json.dumps({
        "images": images, "annotations": anns,
        "categories": [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}]}))
    return img_dir, ann_file


def voc_xml(name: str, w: int, h: int, objects: list[dict[str, Any]]) -> str:
    objs = []
    for o in objects:
        bb = o.get("bndbox")
        bb_xml = "" if bb is None else (
            "<bndbox>" + "".join(f"<{k}>{v}</{k}>" for k, v in zip(
                ("xmin", "ymin", "xmax", "ymax"), bb, strict=True)) + "</bndbox>")
        objs.append(f"<object><name>{o['name']}</name><pose>Unspecified</pose>"
                    f"<truncated>0</truncated><difficult>{o.get('difficult', 0)}</difficult>"
                    f"{bb_xml}</object>")
    return (f"<annotation><folder>VOC</folder><filename>{name}.jpg</filename>"
            f"<size><width>{w}</width><height>{h}</height><depth>3</depth></size>"
            f"{''.join(objs)}</annotation>")


def voc_year(devkit: Path, year: str, entries: dict[str, tuple[int, int, list[dict[str, Any]]]],
             image_set: str = "trainval") -> None:
    base = devkit / f"VOC{year}"
    for sub in ("Annotations", "JPEGImages", "ImageSets/Main"):
        (base / sub).mkdir(parents=True, exist_ok=True)
    for name, (w, h, objects) in entries.items():
        (base / "Annotations" / f"{name}.xml").write_text(voc_xml(name, w, h, objects))
        write_rgb(base / "JPEGImages" / f"{name}.jpg", rect_image(h, w, (0, 0, 0, 0)))
    (base / "ImageSets" / "Main" / f"{image_set}.txt").write_text("\n".join(entries) + "\n")


