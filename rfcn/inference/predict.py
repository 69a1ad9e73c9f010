"""Predicting images: drawn images + detections.json for an image or a folder of images.
Images are read by rfcn.data.image_io (the one image reader: truncated JPEGs, 16-bit and
alpha images handled as everywhere else)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from rfcn.data.image_io import read_image_rgb, to_tensor
from rfcn.inference.exported import Detect as Detector
from rfcn.utils.files import write_json
from rfcn.visualization.draw import draw_detections

logger = logging.getLogger(__name__)



@torch.no_grad()
def predict_images(
    model: Detector,
    paths: Sequence[Path],
    out_dir: Path,
    class_names: list[str],
    label_to_cat_id: dict[int, int],
    score_thresh: float,
    device: torch.device,
) -> list[dict[str, Any]]:
    """Run `model` (eval-mode detector, or an exported runtime with the same calling
    convention) on each image; write `out_dir/<name>` with the boxes drawn and
    `out_dir/detections.json`. Unreadable images are skipped with a warning."""
    import cv2

    out_dir.mkdir(parents=True, exist_ok=True)
    records: list[dict[str, Any]] = []
    for path in paths:
        try:
            rgb = read_image_rgb(path)
        except ValueError as e:
            logger.warning("skipping %s", e)
            continue
        tensor = to_tensor(rgb)
        out = model([tensor.to(device)])[0]
        keep = out["scores"] >= score_thresh
        boxes, labels, scores = (out[k][keep].cpu() for k in ("boxes", "labels", "scores"))
        below = int((~keep).sum())
        best_below = float(out["scores"][~keep].max()) if below else 0.0
        drawn = draw_detections(rgb, boxes, labels, scores, class_names)
        cv2.imwrite(str(out_dir / path.name), cv2.cvtColor(drawn, cv2.COLOR_RGB2BGR))
        records.append(_record(path, rgb.shape, boxes, labels, scores, class_names,
                               label_to_cat_id))
        records[-1]["below_score_thresh"] = below
        records[-1]["best_below"] = round(best_below, 4)
        logger.info("%s: %d detections (%d more below score_thresh=%g)", path.name,
                    len(records[-1]["detections"]), below, score_thresh)
    write_json(out_dir / "detections.json", records)
    return records


def _record(
    path: Path, shape: tuple[int, ...], boxes: torch.Tensor, labels: torch.Tensor,
    scores: torch.Tensor, class_names: list[str], label_to_cat_id: dict[int, int],
) -> dict[str, Any]:
    return {
        "file": str(path),
        "height": int(shape[0]),
        "width": int(shape[1]),
        "detections": [
            {
                "bbox_xyxy": [round(float(v), 2) for v in box],
                "score": round(float(score), 4),
                "label": int(label),
                "class_name": class_names[int(label)],
                "category_id": label_to_cat_id.get(int(label), int(label)),
            }
            for box, label, score in zip(boxes.tolist(), labels.tolist(), scores.tolist(),
                                         strict=True)
        ],
    }
