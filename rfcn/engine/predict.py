"""Detections as files: drawn images + detections.json for a folder of images, and the COCO
results list of an evaluation (detections.json of tools/eval.py)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from rfcn.engine.coco_eval import CocoEvaluator, detections_to_coco_results
from rfcn.engine.json_files import write_json
from rfcn.engine.visualize import draw_detections

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")

Detector = Callable[[list[torch.Tensor]], list[dict[str, torch.Tensor]]]


def list_images(path: Path) -> list[Path]:
    """`path` itself, or the images of a folder (sorted by name)."""
    if path.is_file():
        return [path]
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise ValueError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {path}")
        return files
    raise FileNotFoundError(f"input not found: {path}")


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
        bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if bgr is None or bgr.size == 0:
            logger.warning("skipping %s: not a readable image", path)
            continue
        rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        tensor = torch.from_numpy(rgb).permute(2, 0, 1).float().div_(255)
        out = model([tensor.to(device)])[0]
        keep = out["scores"] >= score_thresh
        boxes, labels, scores = (out[k][keep].cpu() for k in ("boxes", "labels", "scores"))
        drawn = draw_detections(rgb, boxes, labels, scores, class_names)
        cv2.imwrite(str(out_dir / path.name), cv2.cvtColor(drawn, cv2.COLOR_RGB2BGR))
        records.append(_record(path, rgb.shape, boxes, labels, scores, class_names,
                               label_to_cat_id))
        logger.info("%s: %d detections", path.name, len(records[-1]["detections"]))
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


def coco_results(evaluator: Any, dataset: Any) -> list[dict[str, Any]]:
    """The evaluation's detections in COCO results format (original category ids)."""
    if isinstance(evaluator, CocoEvaluator):
        return evaluator.results
    out: list[dict[str, Any]] = []  # VOC: convert with the dataset's label -> id mapping
    for image_id, boxes, labels, scores in evaluator.detections:
        output = {"boxes": torch.as_tensor(boxes), "labels": torch.as_tensor(labels),
                  "scores": torch.as_tensor(scores)}
        out.extend(detections_to_coco_results(image_id, output, dataset.label_to_cat_id))
    return out
