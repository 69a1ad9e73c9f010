"""Entry points behind tools/eval.py and tools/infer.py: `evaluate(cfg)`, `infer(cfg)`.

Both load a training checkpoint (weights-only), rebuild the model it was trained as and run
its inference copy (rfcn.models.inference). Results go to files; nothing is printed.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from rfcn import config as rc
from rfcn.engine.checkpoint import CheckpointError, load_checkpoint, load_model_state
from rfcn.engine.distributed import init_distributed, is_main_process
from rfcn.engine.launch import (
    class_check,
    configure_threads,
    evaluate_model,
    setup_device,
    write_json,
)
from rfcn.engine.visualize import draw_detections
from rfcn.models.inference import inference_copy

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


# ---- evaluate ------------------------------------------------------------------------------


def _model_from_checkpoint(ckpt: dict[str, Any], source: str) -> tuple[nn.Module, Any]:
    """The model a checkpoint was trained as, with its weights, and the checkpoint's config."""
    if "config" not in ckpt or "class_names" not in ckpt:
        raise CheckpointError(
            f"{source} has no config / class_names: not an rfcn training checkpoint"
        )
    ckpt_cfg = rc.from_yaml(ckpt["config"])
    model = rc.build_model(ckpt_cfg.model, len(ckpt["class_names"]), load_backbone=False)
    load_model_state(model, ckpt, architecture=ckpt_cfg.model.name, source=source)
    return model, ckpt_cfg


def evaluate(cfg: Any) -> dict[str, Any]:
    """Evaluate `cfg.checkpoint` on `cfg.dataset` (default: the checkpoint's own dataset).

    Writes metrics.json and detections.json (COCO results format, original category ids)
    to the output directory; returns the metrics (main process).
    """
    output_dir = rc.resolve_output_dir(cfg)
    device = setup_device(cfg.device)
    init_distributed(device)
    configure_threads(None, cfg.num_workers)
    ckpt = load_checkpoint(os.path.expanduser(cfg.checkpoint))
    model, ckpt_cfg = _model_from_checkpoint(ckpt, cfg.checkpoint)
    model.to(device)
    dataset_cfg = rc.validate_dataset_config(cfg.dataset if cfg.dataset else ckpt_cfg.dataset)
    dataset = rc.build_eval_dataset(dataset_cfg)
    class_check(ckpt["class_names"], dataset.class_names, f"evaluating {cfg.checkpoint}")
    metrics, evaluator = evaluate_model(model, dataset, dataset_cfg.name, device, cfg.num_workers)
    if is_main_process():
        output_dir.mkdir(parents=True, exist_ok=True)
        metrics = {
            **metrics,
            "iteration": int(ckpt.get("iteration", 0)),
            "dataset": dataset_cfg.name,
            "checkpoint": str(cfg.checkpoint),
        }
        write_json(output_dir / "metrics.json", metrics)
        write_json(output_dir / "detections.json", _coco_results(evaluator, dataset))
        logger.info("wrote %s and detections.json", output_dir / "metrics.json")
    return metrics


def _coco_results(evaluator: Any, dataset: Any) -> list[dict[str, Any]]:
    from rfcn.engine.coco_eval import CocoEvaluator, detections_to_coco_results

    if isinstance(evaluator, CocoEvaluator):
        return evaluator.results
    # VOC: convert the gathered detections with the dataset's label → id mapping
    out: list[dict[str, Any]] = []
    for image_id, boxes, labels, scores in evaluator.detections:
        out.extend(
            detections_to_coco_results(
                image_id,
                {
                    "boxes": torch.as_tensor(boxes),
                    "labels": torch.as_tensor(labels),
                    "scores": torch.as_tensor(scores),
                },
                dataset.label_to_cat_id,
            )
        )
    return out


# ---- infer ---------------------------------------------------------------------------------


def _list_images(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise ValueError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {path}")
        return files
    raise FileNotFoundError(f"input not found: {path}")


def infer(cfg: Any) -> list[dict[str, Any]]:
    """Detect objects in an image or a folder; writes drawn images and detections.json to
    `cfg.output`; returns the detections."""
    import cv2

    device = setup_device(cfg.device)
    configure_threads(None, 0)
    ckpt = load_checkpoint(os.path.expanduser(cfg.checkpoint))
    model, _ = _model_from_checkpoint(ckpt, cfg.checkpoint)
    model = inference_copy(model.to(device))
    class_names = list(ckpt["class_names"])
    label_to_cat_id = {int(k): int(v) for k, v in (ckpt.get("label_to_cat_id") or {}).items()}
    out_dir = Path(os.path.expanduser(cfg.output))
    out_dir.mkdir(parents=True, exist_ok=True)
    records: list[dict[str, Any]] = []
    for path in _list_images(Path(os.path.expanduser(cfg.input))):
        bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if bgr is None or bgr.size == 0:
            logger.warning("skipping %s: not a readable image", path)
            continue
        rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        tensor = torch.from_numpy(rgb).permute(2, 0, 1).float().div_(255)
        with torch.no_grad():
            out = model([tensor.to(device)])[0]
        keep = out["scores"] >= cfg.score_thresh
        boxes, labels, scores = (out[k][keep].cpu() for k in ("boxes", "labels", "scores"))
        drawn = draw_detections(rgb, boxes, labels, scores, class_names)
        cv2.imwrite(str(out_dir / path.name), cv2.cvtColor(drawn, cv2.COLOR_RGB2BGR))
        records.append(
            {
                "file": str(path),
                "height": int(rgb.shape[0]),
                "width": int(rgb.shape[1]),
                "detections": [
                    {
                        "bbox_xyxy": [round(float(v), 2) for v in box],
                        "score": round(float(score), 4),
                        "label": int(label),
                        "class_name": class_names[int(label)],
                        "category_id": label_to_cat_id.get(int(label), int(label)),
                    }
                    for box, label, score in zip(
                        boxes.tolist(), labels.tolist(), scores.tolist(), strict=True
                    )
                ],
            }
        )
        logger.info("%s: %d detections", path.name, len(records[-1]["detections"]))
    write_json(out_dir / "detections.json", records)
    return records
