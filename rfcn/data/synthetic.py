"""A built-in synthetic detection dataset: shapes on cluttered, textured backgrounds.

Four classes told apart by shape, never by colour (every object gets a random colour):
circle (slightly elliptic), rectangle (aspect 1:1 to 2:1, tilted up to 20 degrees), triangle
(any rotation) and cross (a plus sign, tilted up to 20 degrees). Objects are 1/8 to 3/7 of
the image side across before rotation (28 to 96 px at 224 px; boxes of about 20 to 125 px),
1 to 6 per image; they may overlap (at most 30% of the smaller box is covered) and sit on a
textured background with lines, arcs, dots and small irregular blobs as clutter, plus sensor
noise, occasional blur and JPEG compression.

`ensure_synthetic_dataset` writes the JPEGs and COCO JSON once into a cache directory keyed by
the parameters (and the generator version), atomically: the dataset is assembled in a
temporary directory, under an exclusive file lock, and renamed into place, so a killed
generation never leaves a partial dataset and concurrent processes (DDP ranks) generate once.
It is then read through `CocoDetection`, the same code path as real data.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import math
import os
import shutil
import tempfile
import time
from statistics import NormalDist

import cv2
import numpy as np

__all__ = ["CLASS_NAMES", "ensure_synthetic_dataset", "render_image"]

logger = logging.getLogger(__name__)

GENERATOR_VERSION = 2
CLASS_NAMES = ("circle", "rectangle", "triangle", "cross")
# Geometry is designed at REFERENCE_SIZE px (the shorter image side) and scales with it:
# objects 28..96 px (before rotation) at 224 px.
REFERENCE_SIZE = 224
MIN_OBJECT, MAX_OBJECT = 28 / REFERENCE_SIZE, 96 / REFERENCE_SIZE  # fractions of the side
MIN_IMAGE_SIZE = 32
MAX_OVERLAP = 0.3
_SHIFT = 4  # cv2 sub-pixel drawing: coordinates carry 4 fractional bits
_ONE = 1 << _SHIFT

Shape = tuple[int, list[float], float]  # (label 1..C, xyxy box, area)
_GAUSS_LUT = np.array([NormalDist().inv_cdf((i + 0.5) / 256) for i in range(256)], np.float32)


def _random_color(rng: np.random.Generator, avoid: np.ndarray | None = None) -> tuple[int, ...]:
    """A saturated-ish RGB colour, far enough from ``avoid`` to stay visible."""
    for _ in range(20):
        hsv = np.array([[[rng.integers(0, 180), rng.integers(90, 256), rng.integers(70, 256)]]],
                       dtype=np.uint8)
        rgb = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)[0, 0].astype(np.float32)
        if avoid is None or np.linalg.norm(rgb - avoid) > 90:
            break
    return tuple(int(v) for v in rgb)


def _background(rng: np.random.Generator, h: int, w: int, clutter: float) -> np.ndarray:
    scale = min(h, w) / REFERENCE_SIZE
    base = rng.uniform(60, 200, size=3).astype(np.float32)
    # Low-frequency texture (a coarse random field upsampled, plus a linear gradient), built
    # at quarter resolution: it is smooth anyway, and this keeps generation fast.
    sh, sw = max(h // 4, 2), max(w // 4, 2)
    coarse = rng.normal(0, 28, size=(int(rng.integers(3, 9)), int(rng.integers(3, 9)), 3))
    small = cv2.resize(coarse.astype(np.float32), (sw, sh), interpolation=cv2.INTER_CUBIC)
    ang = rng.uniform(0, 2 * math.pi)
    ramp = ((np.cos(ang) / sw) * np.arange(sw, dtype=np.float32)[None, :]
            + (np.sin(ang) / sh) * np.arange(sh, dtype=np.float32)[:, None])
    small += ramp[..., None] * rng.uniform(-40, 40, 3).astype(np.float32) + base
    small = np.clip(small, 0, 255).astype(np.uint8)
    img = cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)
    # clutter: lines, arcs, dots and small irregular blobs (all smaller/thinner than objects)
    for _ in range(round(rng.integers(3, 10) * clutter)):
        p1 = (int(rng.integers(0, w)), int(rng.integers(0, h)))
        p2 = (int(rng.integers(0, w)), int(rng.integers(0, h)))
        cv2.line(img, p1, p2, _random_color(rng), int(rng.integers(1, 3)), cv2.LINE_AA)
    for _ in range(round(rng.integers(0, 4) * clutter)):
        c = (int(rng.integers(0, w)), int(rng.integers(0, h)))
        axes = (int(rng.integers(10, 50) * scale), int(rng.integers(10, 50) * scale))
        start = float(rng.uniform(0, 360))
        cv2.ellipse(img, c, axes, float(rng.uniform(0, 180)), start,
                    start + float(rng.uniform(60, 200)), _random_color(rng),
                    int(rng.integers(1, 3)), cv2.LINE_AA)
    for _ in range(round(rng.integers(2, 12) * clutter)):
        c = (int(rng.integers(0, w)), int(rng.integers(0, h)))
        cv2.circle(img, c, int(rng.integers(1, 4)), _random_color(rng), -1, cv2.LINE_AA)
    for _ in range(round(rng.integers(0, 5) * clutter)):
        cx, cy, r = rng.uniform(0, w), rng.uniform(0, h), rng.uniform(3, 7) * scale
        k = int(rng.integers(5, 8))
        angles = np.sort(rng.uniform(0, 2 * math.pi, k))
        radii = r * rng.uniform(0.5, 1.3, k)
        pts = np.stack([cx + radii * np.cos(angles), cy + radii * np.sin(angles)], 1)
        cv2.fillPoly(img, [np.round(pts * _ONE).astype(np.int32)], _random_color(rng),
                     cv2.LINE_AA, _SHIFT)
    return img


def _polygon(label: int, size: float, rng: np.random.Generator) -> np.ndarray:
    """Vertices (K, 2) of a shape of class ``label`` centred on the origin (not circles)."""
    name = CLASS_NAMES[label - 1]
    if name == "rectangle":
        a, b = size / 2, size / 2 * rng.uniform(0.5, 1.0)
        if rng.random() < 0.5:
            a, b = b, a
        pts = np.array([[-a, -b], [a, -b], [a, b], [-a, b]])
        theta = rng.uniform(-math.pi / 9, math.pi / 9)
    elif name == "triangle":
        r = size / 2
        angles = rng.uniform(0, 2 * math.pi) + np.arange(3) * 2 * math.pi / 3
        angles = angles + rng.uniform(-0.15, 0.15, 3)
        pts = np.stack([r * np.cos(angles), r * np.sin(angles)], 1)
        theta = 0.0
    elif name == "cross":
        r, t = size / 2, size / 2 * rng.uniform(0.28, 0.4)
        pts = np.array([[-t, -r], [t, -r], [t, -t], [r, -t], [r, t], [t, t], [t, r], [-t, r],
                        [-t, t], [-r, t], [-r, -t], [-t, -t]])
        theta = rng.uniform(-math.pi / 9, math.pi / 9)
    else:
        raise ValueError(name)
    rot = np.array([[math.cos(theta), -math.sin(theta)], [math.sin(theta), math.cos(theta)]])
    return pts @ rot.T


def _overlap_ok(box: list[float], boxes: list[list[float]]) -> bool:
    area = (box[2] - box[0]) * (box[3] - box[1])
    for b in boxes:
        iw = min(box[2], b[2]) - max(box[0], b[0])
        ih = min(box[3], b[3]) - max(box[1], b[1])
        if iw > 0 and ih > 0:
            smaller = min(area, (b[2] - b[0]) * (b[3] - b[1]))
            if iw * ih > MAX_OVERLAP * smaller:
                return False
    return True


def render_image(
    rng: np.random.Generator, height: int, width: int, *, max_objects: int = 6,
    clutter: float = 1.0,
) -> tuple[np.ndarray, list[Shape]]:
    """One synthetic image ``np.ndarray[H, W, 3]`` uint8 RGB and its objects (1 to
    ``max_objects``; ``clutter`` scales the number of background distractors)."""
    img = _background(rng, height, width, clutter)
    shapes: list[Shape] = []
    boxes: list[list[float]] = []
    for _ in range(int(rng.integers(1, max_objects + 1))):
        label = int(rng.integers(1, len(CLASS_NAMES) + 1))
        side = min(height, width)
        size = side * float(np.exp(rng.uniform(math.log(MIN_OBJECT), math.log(MAX_OBJECT))))
        if CLASS_NAMES[label - 1] == "circle":
            a, b = size / 2, size / 2 * rng.uniform(0.85, 1.0)
            ang = rng.uniform(0, math.pi)
            hx = math.sqrt((a * math.cos(ang)) ** 2 + (b * math.sin(ang)) ** 2)
            hy = math.sqrt((a * math.sin(ang)) ** 2 + (b * math.cos(ang)) ** 2)
            rel = np.array([[-hx, -hy], [hx, hy]])
            area = math.pi * a * b
        else:
            pts = _polygon(label, size, rng)
            rel = pts
            area = 0.5 * abs(float(np.dot(pts[:, 0], np.roll(pts[:, 1], 1))
                                   - np.dot(pts[:, 1], np.roll(pts[:, 0], 1))))
        lo, hi = rel.min(0), rel.max(0)
        for _try in range(15):
            cx = rng.uniform(-lo[0] + 1, width - hi[0] - 1)
            cy = rng.uniform(-lo[1] + 1, height - hi[1] - 1)
            # continuous pixel coordinates: cv2 point x is the centre of pixel column x
            box = [cx + lo[0] + 0.5, cy + lo[1] + 0.5, cx + hi[0] + 0.5, cy + hi[1] + 0.5]
            if _overlap_ok(box, boxes):
                break
        else:
            continue
        x0, y0, x1, y1 = (int(v) for v in (box[0], box[1], box[2], box[3]))
        local = img[max(y0, 0):y1 + 1, max(x0, 0):x1 + 1].reshape(-1, 3).mean(0)
        color = _random_color(rng, avoid=local)
        if CLASS_NAMES[label - 1] == "circle":
            center = (round(cx * _ONE), round(cy * _ONE))
            axes = (round(a * _ONE), round(b * _ONE))
            cv2.ellipse(img, center, axes, math.degrees(ang), 0, 360, color, -1,
                        cv2.LINE_AA, _SHIFT)
        else:
            poly = np.round((pts + [cx, cy]) * _ONE).astype(np.int32)
            cv2.fillPoly(img, [poly], color, cv2.LINE_AA, _SHIFT)
            if rng.random() < 0.3:  # a contrasting outline on some objects
                cv2.polylines(img, [poly], True, _random_color(rng, np.array(color, np.float32)),
                              1, cv2.LINE_AA, _SHIFT)
        boxes.append(box)
        shapes.append((label, box, area))
    # Gaussian sensor noise via a 256-entry inverse-CDF table indexed by random bytes:
    # several times faster than drawing normals, and just as deterministic.
    noise = (_GAUSS_LUT * np.float32(rng.uniform(2, 8))).round().astype(np.int16)
    idx = np.frombuffer(rng.bytes(img.size), dtype=np.uint8).reshape(img.shape)
    img = cv2.add(img, noise[idx], dtype=cv2.CV_8U)  # saturating add
    if rng.random() < 0.3:
        img = cv2.GaussianBlur(img, (3, 3), 0)
    return img, shapes


def _write_split(
    split_dir: str, ann_file: str, num: int, image_size: int, seed: int, split_id: int,
    max_objects: int, clutter: float,
) -> None:
    os.makedirs(split_dir)
    images, annotations = [], []
    for i in range(num):
        rng = np.random.default_rng([seed, split_id, i])
        img, shapes = render_image(rng, image_size, image_size, max_objects=max_objects,
                                   clutter=clutter)
        name = f"{i:06d}.jpg"
        ok, buf = cv2.imencode(".jpg", cv2.cvtColor(img, cv2.COLOR_RGB2BGR),
                               [cv2.IMWRITE_JPEG_QUALITY, 90])
        if not ok:
            raise RuntimeError(f"JPEG encoding failed for {name}")
        buf.tofile(os.path.join(split_dir, name))
        images.append({"id": i + 1, "file_name": name, "width": image_size,
                       "height": image_size})
        for label, (x1, y1, x2, y2), area in shapes:
            annotations.append({
                "id": len(annotations) + 1, "image_id": i + 1, "category_id": label,
                "bbox": [round(x1, 2), round(y1, 2), round(x2 - x1, 2), round(y2 - y1, 2)],
                "area": round(area, 2), "iscrowd": 0,
            })
    categories = [{"id": k + 1, "name": n, "supercategory": "shape"}
                  for k, n in enumerate(CLASS_NAMES)]
    with open(ann_file, "w", encoding="utf-8") as f:
        json.dump({"info": {"description": "rfcn synthetic shapes", "version": GENERATOR_VERSION},
                   "images": images, "annotations": annotations, "categories": categories}, f)


def ensure_synthetic_dataset(
    root: str | os.PathLike[str],
    *,
    num_train: int = 2000,
    num_val: int = 200,
    image_size: int = 224,
    seed: int = 0,
    max_objects: int = 6,
    clutter: float = 1.0,
) -> dict[str, tuple[str, str]]:
    """Generate the synthetic dataset under ``root`` once; return its paths.

    Images are ``image_size`` x ``image_size`` with 1 to ``max_objects`` objects; ``clutter``
    scales the number of background distractors (0 for plain textured backgrounds).

    Returns:
        ``{"train": (img_dir, ann_file), "val": (img_dir, ann_file)}``. The data lives in
        ``root/synthetic-<hash of the parameters>/``; other parameters give another directory.
    """
    if (num_train < 1 or num_val < 1 or image_size < MIN_IMAGE_SIZE or max_objects < 1
            or not clutter >= 0):
        raise ValueError(
            f"need num_train, num_val, max_objects >= 1, image_size >= {MIN_IMAGE_SIZE}, "
            f"clutter >= 0; got num_train={num_train}, num_val={num_val}, "
            f"image_size={image_size}, max_objects={max_objects}, clutter={clutter}")
    params = {"version": GENERATOR_VERSION, "num_train": int(num_train), "num_val": int(num_val),
              "image_size": int(image_size), "seed": int(seed), "max_objects": int(max_objects),
              "clutter": float(clutter)}
    key = hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()[:12]
    root = os.fspath(root)
    final = os.path.join(root, f"synthetic-{key}")
    paths = {split: (os.path.join(final, split), os.path.join(final, "annotations",
                                                               f"{split}.json"))
             for split in ("train", "val")}
    if os.path.isdir(final):
        return paths
    os.makedirs(root, exist_ok=True)
    with open(os.path.join(root, f".synthetic-{key}.lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released by the OS if this process dies
        if os.path.isdir(final):  # another process generated it while we waited
            return paths
        for name in os.listdir(root):  # leftovers of killed generations (we hold the lock)
            if name.startswith(f".synthetic-{key}.tmp"):
                shutil.rmtree(os.path.join(root, name), ignore_errors=True)
        t0 = time.perf_counter()
        tmp = tempfile.mkdtemp(prefix=f".synthetic-{key}.tmp", dir=root)
        try:
            os.makedirs(os.path.join(tmp, "annotations"))
            for split_id, (split, num) in enumerate((("train", num_train), ("val", num_val))):
                _write_split(os.path.join(tmp, split),
                             os.path.join(tmp, "annotations", f"{split}.json"),
                             num, image_size, seed, split_id, max_objects, clutter)
            with open(os.path.join(tmp, "params.json"), "w", encoding="utf-8") as f:
                json.dump(params, f, indent=1)
            os.rename(tmp, final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        logger.info("generated synthetic dataset (%d train + %d val images, %d px) in %s "
                    "in %.1f s", num_train, num_val, image_size, final, time.perf_counter() - t0)
    return paths
