"""A COCO-size annotation file for measuring the data pipeline (scripts/bench_data.py).

`write_coco_size_annotations` writes a COCO instances JSON shaped like train2017 (118,287
images, 860,001 annotations with polygon segmentations, 1% crowd annotations with
uncompressed RLE) whose images all point at a handful of real JPEGs: ``image_dir`` holds
``num_jpegs`` images drawn with OpenCV and one symlink per image id to one of them, so
reading the images measures decoding, not the disk.

Shape shorthand: N images, A annotations, P polygon points of one annotation.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

__all__ = ["SyntheticCoco", "write_coco_size_annotations", "write_jpegs"]

logger = logging.getLogger(__name__)

# (h, w) of the real JPEGs, cycling: COCO's most common sizes
_JPEG_SIZES = ((480, 640), (427, 640), (640, 480), (640, 427), (424, 640), (512, 640),
               (375, 500), (500, 375), (640, 640), (360, 640))
_CHUNK = 50_000  # annotations serialised at a time (bounds the memory of the generator)


@dataclass(frozen=True)
class SyntheticCoco:
    """What `write_coco_size_annotations` wrote."""

    ann_file: Path
    image_dir: Path
    num_images: int
    num_annotations: int
    num_bytes: int


def write_jpegs(out_dir: Path, num_jpegs: int, seed: int = 0) -> list[tuple[Path, int, int]]:
    """``num_jpegs`` textured JPEGs (COCO-like sizes) -> [(path, h, w)]."""
    out_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    made = []
    for k in range(num_jpegs):
        h, w = _JPEG_SIZES[k % len(_JPEG_SIZES)]
        small = rng.integers(0, 256, (h // 16 + 1, w // 16 + 1, 3), dtype=np.uint8)
        img = cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)
        noise = rng.integers(-20, 21, img.shape, dtype=np.int16)
        img = np.clip(img.astype(np.int16) + noise, 0, 255).astype(np.uint8)
        path = out_dir / f"real_{k:03d}.jpg"
        if not cv2.imwrite(str(path), img, [cv2.IMWRITE_JPEG_QUALITY, 90]):
            raise OSError(f"{path}: cannot write JPEG")
        made.append((path, h, w))
    return made


def _polygons(rng: np.random.Generator, boxes: np.ndarray) -> list[list[list[float]]]:
    """One closed polygon inside each xywh box of float[A, 4], as COCO writes segmentations:
    ``[[x0, y0, x1, y1, ...]]`` with 6 to 39 points, two decimals."""
    points = rng.integers(6, 40, len(boxes))
    ends = np.cumsum(points)
    owner = np.repeat(np.arange(len(boxes)), points)
    # angles sorted within each polygon: offset every polygon by 10 (> 2 pi) and sort once
    angle = np.sort(rng.uniform(0, 2 * np.pi, int(ends[-1])) + 10.0 * owner) - 10.0 * owner
    r = rng.uniform(0.6, 1.0, len(angle))
    x, y, w, h = (boxes[owner, k] for k in range(4))
    xy = np.stack([x + w / 2 * (1 + r * np.cos(angle)), y + h / 2 * (1 + r * np.sin(angle))], 1)
    flat = xy.round(2).ravel().tolist()
    starts = np.concatenate([[0], ends[:-1]]) * 2
    return [[flat[a:b]] for a, b in zip(starts.tolist(), (ends * 2).tolist(), strict=True)]


def _rle(rng: np.random.Generator, h: int, w: int) -> dict[str, Any]:
    """Uncompressed RLE of a random mask of (h, w), as COCO stores crowd regions."""
    k = int(rng.integers(20, 200)) * 2
    cuts = np.sort(rng.choice(h * w - 1, k - 1, replace=False) + 1)
    counts = np.diff(np.concatenate([[0], cuts, [h * w]]))
    return {"counts": counts.tolist(), "size": [h, w]}


def _annotations(rng: np.random.Generator, first_id: int, image_ids: np.ndarray,
                 hw: np.ndarray, crowd: np.ndarray, cat_ids: np.ndarray) -> list[dict[str, Any]]:
    """A annotations of the images ``image_ids`` int[A] of sizes ``hw`` int[A, 2]."""
    h, w = hw[:, 0].astype(np.float64), hw[:, 1].astype(np.float64)
    bw, bh = rng.uniform(4, w * 0.6), rng.uniform(4, h * 0.6)
    boxes = np.stack([rng.uniform(0, w - bw), rng.uniform(0, h - bh), bw, bh], 1)
    polys = _polygons(rng, boxes)
    area = (bw * bh * 0.7).round(2).tolist()
    bbox = boxes.round(2).tolist()
    out = []
    for k, (iid, cid, c) in enumerate(zip(image_ids.tolist(), cat_ids.tolist(),
                                          crowd.tolist(), strict=True)):
        seg = _rle(rng, int(hw[k, 0]), int(hw[k, 1])) if c else polys[k]
        out.append({"segmentation": seg, "area": area[k], "iscrowd": int(c), "image_id": iid,
                    "bbox": bbox[k], "category_id": cid, "id": first_id + k})
    return out


def _dumps(obj: Any) -> bytes:
    try:
        import orjson
    except ImportError:
        return json.dumps(obj, separators=(",", ":")).encode()
    return orjson.dumps(obj)


def _link_images(image_dir: Path, jpegs: list[tuple[Path, int, int]],
                 images: list[dict[str, Any]]) -> None:
    for k, img in enumerate(images):
        link = image_dir / img["file_name"]
        if not link.is_symlink():
            os.symlink(jpegs[k % len(jpegs)][0], link)


def write_coco_size_annotations(
    out_dir: str | os.PathLike[str],
    num_images: int = 118_287,
    num_annotations: int = 860_001,
    crowd_fraction: float = 0.01,
    num_jpegs: int = 50,
    seed: int = 0,
) -> SyntheticCoco:
    """Write ``out_dir/instances.json``, ``out_dir/jpegs/`` and ``out_dir/images/`` (one
    symlink per image to a real JPEG of the size its entry says).

    Annotations fall on random images (about 7.3 per image at COCO size); categories have
    COCO's 80 ids out of 1..90.
    """
    out = Path(out_dir)
    image_dir = out / "images"
    image_dir.mkdir(parents=True, exist_ok=True)
    jpegs = write_jpegs(out / "jpegs", num_jpegs, seed)
    rng = np.random.default_rng(seed)
    images = [{"license": 1, "file_name": f"{i + 1:012d}.jpg", "coco_url": "",
               "height": jpegs[i % len(jpegs)][1], "width": jpegs[i % len(jpegs)][2],
               "date_captured": "2013-11-14 11:18:45", "flickr_url": "", "id": i + 1}
              for i in range(num_images)]
    _link_images(image_dir, jpegs, images)
    skip = {12, 26, 29, 30, 45, 66, 68, 69, 71, 83}  # the 10 ids COCO leaves out
    cats = [{"supercategory": "thing", "id": c, "name": f"class_{c}"}
            for c in range(1, 91) if c not in skip]
    owners = rng.integers(0, num_images, num_annotations)
    crowd = rng.random(num_annotations) < crowd_fraction
    cat_of = rng.choice([c["id"] for c in cats], num_annotations)
    hw = np.array([(img["height"], img["width"]) for img in images], dtype=np.int64)
    ann_file = out / "instances.json"
    head = _dumps({"info": {"description": "synthetic COCO-size"}, "licenses": [],
                   "images": images})
    with open(ann_file, "wb") as f:
        f.write(head[:-1] + b',"annotations":[')
        for start in range(0, num_annotations, _CHUNK):
            stop = min(start + _CHUNK, num_annotations)
            sl = slice(start, stop)
            chunk = _annotations(rng, start + 1, owners[sl] + 1, hw[owners[sl]], crowd[sl],
                                 cat_of[sl])
            body = _dumps(chunk)[1:-1]
            f.write(body if start == 0 else b"," + body)
        cat_json = _dumps({"categories": cats})
        f.write(b"]," + cat_json[1:])
    size = ann_file.stat().st_size
    logger.info("wrote %s: %d images, %d annotations, %.0f MB", ann_file, num_images,
                num_annotations, size / 2**20)
    return SyntheticCoco(ann_file, image_dir, num_images, num_annotations, size)
