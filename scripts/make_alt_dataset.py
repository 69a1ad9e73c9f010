"""Write a second, independent COCO-json detection dataset, to check that the quickstart recipe
learns data it was not tuned on (issue: "the same recipe pointed at another COCO-format dataset
of similar difficulty must learn it too").

It shares no code with rfcn's synthetic generator: other classes (star, hexagon, ring, arrow,
digit), non-square images of varying size (200-340 × 180-300 px), flat noisy backgrounds
with line clutter, category ids starting at 10, JPEG files.

    python scripts/make_alt_dataset.py /tmp/alt            # 2000 train + 200 val images
    python tools/train.py dataset=coco_json \
        dataset.train.ann_file=/tmp/alt/train.json dataset.train.img_dir=/tmp/alt/train \
        dataset.val.ann_file=/tmp/alt/val.json dataset.val.img_dir=/tmp/alt/val
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import cv2
import numpy as np

CLASSES = ("star", "hexagon", "ring", "arrow", "digit")
FIRST_CATEGORY_ID = 10
_ARROW = np.array([[-1, -.25], [.2, -.25], [.2, -.6], [1, 0], [.2, .6], [.2, .25], [-1, .25]],
                  np.float32)


def _polygon(cx: float, cy: float, r: float, corners: int, rot: float,
             inner: float | None = None) -> np.ndarray:
    """Regular polygon, or a star when `inner` (radius ratio of the inner corners) is set."""
    n = corners * 2 if inner else corners
    pts = []
    for i in range(n):
        rr = r * (inner if inner and i % 2 else 1.0)
        a = rot + i * 2 * math.pi / n
        pts.append((cx + rr * math.cos(a), cy + rr * math.sin(a)))
    return np.array(pts, np.float32)


def _draw(img: np.ndarray, cls: int, cx: float, cy: float, r: float,
          rng: np.random.Generator, color: tuple[int, ...]) -> list[float] | None:
    """Draw one object; returns its xyxy box (None if nothing visible was drawn)."""
    rot = rng.uniform(0, 2 * math.pi)
    if cls == 2:  # ring
        cv2.circle(img, (round(cx), round(cy)), round(r), color, max(2, round(r * 0.3)),
                   cv2.LINE_AA)
        return [cx - r, cy - r, cx + r, cy + r]
    if cls == 4:  # digit: box from the drawn pixels
        text = str(int(rng.integers(0, 10)))
        scale = r / 16
        thick = max(1, round(scale * 2.5))
        (w, h), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thick)
        org = (round(cx - w / 2), round(cy + h / 2))
        mask = np.zeros(img.shape[:2], np.uint8)
        cv2.putText(mask, text, org, cv2.FONT_HERSHEY_SIMPLEX, scale, 255, thick, cv2.LINE_AA)
        ys, xs = np.nonzero(mask)
        if len(xs) == 0:
            return None
        cv2.putText(img, text, org, cv2.FONT_HERSHEY_SIMPLEX, scale, color, thick, cv2.LINE_AA)
        return [float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1)]
    if cls == 0:
        pts = _polygon(cx, cy, r, 5, rot, inner=0.45)
    elif cls == 1:
        pts = _polygon(cx, cy, r, 6, rot)
    else:
        c, s = math.cos(rot), math.sin(rot)
        pts = (_ARROW @ np.array([[c, s], [-s, c]], np.float32)) * r + [cx, cy]
    cv2.fillPoly(img, [np.round(pts * 16).astype(np.int32)], color, cv2.LINE_AA, shift=4)
    (x1, y1), (x2, y2) = pts.min(0), pts.max(0)
    return [float(x1), float(y1), float(x2), float(y2)]


def make_split(root: Path, split: str, count: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    (root / split).mkdir(parents=True, exist_ok=True)
    images, anns = [], []
    for i in range(count):
        h, w = int(rng.integers(180, 300)), int(rng.integers(200, 340))
        img = (rng.normal(0, 18, (h, w, 3)) + rng.uniform(40, 210, 3)).clip(0, 255)
        img = img.astype(np.uint8)
        for _ in range(int(rng.integers(2, 8))):  # clutter: thin lines
            x, y = int(rng.integers(0, w)), int(rng.integers(0, h))
            end = (x + int(rng.integers(-80, 80)), y + int(rng.integers(-80, 80)))
            cv2.line(img, (x, y), end, tuple(int(v) for v in rng.integers(0, 256, 3)),
                     int(rng.integers(1, 3)))
        placed: list[tuple[float, float, float]] = []
        for _ in range(int(rng.integers(1, 7))):
            r = rng.uniform(0.06, 0.2) * min(h, w)
            for _try in range(10):  # no overlap with the objects already placed
                cx, cy = rng.uniform(r, w - r), rng.uniform(r, h - r)
                if all(abs(cx - px) > r + pr or abs(cy - py) > r + pr for px, py, pr in placed):
                    break
            else:
                continue
            cls = int(rng.integers(0, len(CLASSES)))
            box = _draw(img, cls, cx, cy, r, rng, tuple(int(v) for v in rng.integers(0, 256, 3)))
            if box is None:
                continue
            x1, y1, x2, y2 = max(0.0, box[0]), max(0.0, box[1]), min(w, box[2]), min(h, box[3])
            placed.append((cx, cy, r))
            anns.append({"id": len(anns) + 1, "image_id": i + 1,
                         "category_id": FIRST_CATEGORY_ID + cls,
                         "bbox": [x1, y1, x2 - x1, y2 - y1], "area": (x2 - x1) * (y2 - y1),
                         "iscrowd": 0})
        if rng.random() < 0.3:
            img = cv2.GaussianBlur(img, (3, 3), 0)
        name = f"{i:05d}.jpg"
        cv2.imwrite(str(root / split / name), cv2.cvtColor(img, cv2.COLOR_RGB2BGR),
                    [cv2.IMWRITE_JPEG_QUALITY, 90])
        images.append({"id": i + 1, "file_name": name, "height": h, "width": w})
    cats = [{"id": FIRST_CATEGORY_ID + k, "name": c} for k, c in enumerate(CLASSES)]
    (root / f"{split}.json").write_text(
        json.dumps({"images": images, "annotations": anns, "categories": cats}))


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("root", type=Path)
    p.add_argument("--num-train", type=int, default=2000)
    p.add_argument("--num-val", type=int, default=200)
    args = p.parse_args(argv)
    make_split(args.root, "train", args.num_train, seed=1)
    make_split(args.root, "val", args.num_val, seed=2)
    print(f"wrote {args.root}/train.json, {args.root}/val.json and the images")


if __name__ == "__main__":
    main()
