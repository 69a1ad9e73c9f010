"""Drawing detections on images with OpenCV (for TensorBoard and tools/infer.py)."""

from __future__ import annotations

import colorsys

import cv2
import numpy as np
from torch import Tensor


def class_color(label: int) -> tuple[int, int, int]:
    """A stable, distinct RGB colour per label (golden-ratio hue steps)."""
    h = (label * 0.618033988749895) % 1.0
    r, g, b = colorsys.hsv_to_rgb(h, 0.85, 0.95)
    return int(255 * r), int(255 * g), int(255 * b)


def draw_detections(
    image: np.ndarray,
    boxes: Tensor | np.ndarray,
    labels: Tensor | np.ndarray,
    scores: Tensor | np.ndarray | None,
    class_names: list[str],
    score_thresh: float = 0.0,
) -> np.ndarray:
    """Boxes with "name score" captions drawn on a copy of `image`.

    Args:
        image: uint8 [H, W, 3] RGB.
        boxes: [N, 4] xyxy pixels; labels: [N] in 1..C-1; scores: [N] or None (ground truth).
    Returns:
        uint8 [H, W, 3] RGB.
    """
    out = np.ascontiguousarray(image.copy())
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    labels = np.asarray(labels).reshape(-1)
    scores_arr = None if scores is None else np.asarray(scores, dtype=np.float64).reshape(-1)
    h, w = out.shape[:2]
    thickness = max(1, round(min(h, w) / 300))
    font_scale = max(0.35, min(h, w) / 900)
    order = np.arange(len(boxes)) if scores_arr is None else np.argsort(scores_arr)
    for i in order:  # lowest score first so the best boxes end up on top
        if scores_arr is not None and scores_arr[i] < score_thresh:
            continue
        label = int(labels[i])
        color = class_color(label)
        x1, y1, x2, y2 = (int(round(v)) for v in boxes[i])
        cv2.rectangle(out, (x1, y1), (x2, y2), color, thickness, lineType=cv2.LINE_AA)
        name = class_names[label] if 0 <= label < len(class_names) else str(label)
        caption = name if scores_arr is None else f"{name} {scores_arr[i]:.2f}"
        (tw, th), baseline = cv2.getTextSize(caption, cv2.FONT_HERSHEY_SIMPLEX, font_scale, 1)
        ty = max(y1, th + baseline)
        cv2.rectangle(out, (x1, ty - th - baseline), (x1 + tw, ty), color, -1)
        cv2.putText(
            out,
            caption,
            (x1, ty - baseline),
            cv2.FONT_HERSHEY_SIMPLEX,
            font_scale,
            (0, 0, 0),
            1,
            lineType=cv2.LINE_AA,
        )
    return out
