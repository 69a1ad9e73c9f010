"""Drawing a dataset's ground truth (optionally after the training transforms) for a look
before training."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from rfcn.data.image_io import read_image_rgb
from rfcn.visualization.draw import draw_detections

logger = logging.getLogger(__name__)


def sample_indices(num_images: int, n: int, seed: int) -> list[int]:
    """`n` distinct image indices (all of them when n >= num_images), seeded, in order."""
    if n >= num_images:
        return list(range(num_images))
    rng = np.random.default_rng(seed)
    return sorted(int(i) for i in rng.choice(num_images, size=n, replace=False))


def draw_ground_truth(
    dataset: Any, indices: list[int], out_dir: Path, transforms: Any | None, seed: int
) -> list[Path]:
    """`out_dir/<index>_<file name>.jpg` for each index: the image with its boxes and class
    names (crowd / difficult boxes in the same colours, captioned); unreadable files are
    skipped with a warning. With `transforms`, the image and boxes as training sees them."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for index in indices:
        path = Path(dataset.image_path(index))
        try:
            image = read_image_rgb(str(path))
        except ValueError as e:
            logger.warning("skipping %s: %s", path, e)
            continue
        target = dataset.get_annotation(index)
        if transforms is not None:
            image, target = transforms(image, target, np.random.default_rng([seed, index]))
        names = list(dataset.class_names)
        ignored = (np.asarray(target["iscrowd"]) | np.asarray(target["difficult"]))
        drawn = draw_detections(image, target["boxes"], target["labels"], None, names)
        if ignored.any():  # mark the boxes training ignores
            for box in np.asarray(target["boxes"])[ignored]:
                x1, y1 = int(box[0]), int(box[1])
                cv2.putText(drawn, "ignored", (x1, y1 + 12), cv2.FONT_HERSHEY_SIMPLEX, 0.35,
                            (255, 255, 255), 1, cv2.LINE_AA)
        file = out_dir / f"{index:05d}_{path.stem}.jpg"
        cv2.imwrite(str(file), cv2.cvtColor(drawn, cv2.COLOR_RGB2BGR))
        written.append(file)
    return written
