"""COCO evaluation at scale against raw pycocotools (scripts/bench_data.py, issue 21).

`write_detections` makes a results file of `per_image` detections per image from a ground
truth file (jittered true boxes and random false positives, seeded); `raw_pycocotools` and
`rfcn_evaluator` each score it from the files, in the process they run in (run each with
rfcn.data.pipeline_benchmark.run_isolated, so that memory is measured alone): raw is
`COCO(ann_file)`, `loadRes`, `COCOeval` evaluate / accumulate / summarize; rfcn is the
training's own path, the dataset (index from its cache), `CocoEvaluator.from_dataset`,
`process()` of every image's detections as the model outputs them, `evaluate()`,
`release()`. Both report seconds, peak and retained RSS and the 12 COCOeval stats.
"""

from __future__ import annotations

import contextlib
import io
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from rfcn.data.process_memory import memory_of, peak_rss, release_free_heap
from rfcn.evaluation.coco import CocoEvaluator

__all__ = ["raw_pycocotools", "rfcn_evaluator", "write_detections"]


def write_detections(ann_file: str, out_file: str, per_image: int = 100, seed: int = 0
                     ) -> int:
    """`per_image` COCO results per image of `ann_file` into `out_file`; returns the count."""
    data = json.loads(Path(ann_file).read_text())
    rng = np.random.default_rng(seed)
    by_image: dict[int, list[tuple[list[float], int]]] = {}
    for ann in data["annotations"]:
        by_image.setdefault(int(ann["image_id"]), []).append((ann["bbox"], ann["category_id"]))
    cat_ids = np.array([c["id"] for c in data["categories"]])
    results: list[dict[str, Any]] = []
    for img in data["images"]:
        w, h = float(img["width"]), float(img["height"])
        true = by_image.get(int(img["id"]), [])[:per_image]
        boxes = np.zeros((per_image, 4))
        cats = cat_ids[rng.integers(0, len(cat_ids), per_image)]
        for k, (bbox, cat) in enumerate(true):
            x, y, bw, bh = bbox
            boxes[k] = [x + rng.normal(0, 0.05 * bw), y + rng.normal(0, 0.05 * bh),
                        bw * rng.uniform(0.9, 1.1), bh * rng.uniform(0.9, 1.1)]
            cats[k] = cat
        n_false = per_image - len(true)
        xy = rng.uniform(0, 1, (n_false, 2)) * [w, h]
        wh = rng.uniform(0.02, 0.4, (n_false, 2)) * [w, h]
        boxes[len(true):] = np.concatenate([xy, wh], axis=1)
        scores = rng.random(per_image)
        scores[:len(true)] = 0.5 + 0.5 * scores[:len(true)]
        for k in range(per_image):
            results.append({"image_id": int(img["id"]), "category_id": int(cats[k]),
                            "bbox": [round(float(v), 2) for v in boxes[k]],
                            "score": round(float(scores[k]), 4)})
    Path(out_file).write_text(json.dumps(results))
    return len(results)


def _report(start: float, stats: np.ndarray, extra: dict[str, Any]) -> dict[str, Any]:
    seconds = time.perf_counter() - start
    release_free_heap()
    return {"seconds": seconds, "peak_rss": peak_rss(), "retained_rss": memory_of().rss,
            "stats": [float(s) for s in stats], **extra}


def raw_pycocotools(ann_file: str, results_file: str) -> dict[str, Any]:
    """pycocotools alone, as its own example does it (results loaded before the clock)."""
    results = json.loads(Path(results_file).read_text())
    start = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(ann_file)
        ev = COCOeval(gt, gt.loadRes(results), iouType="bbox")
        ev.params.imgIds = sorted(gt.getImgIds())
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    stats = ev.stats
    del ev, gt, results
    return _report(start, stats, {})


def rfcn_evaluator(img_dir: str, ann_file: str, results_file: str, cache_dir: str
                   ) -> dict[str, Any]:
    """rfcn's evaluation path; the detections become per-image model outputs (tensors,
    labels) before the clock, as they leave the model in training's evaluation."""
    from rfcn.data.coco import CocoDetection

    dataset = CocoDetection(img_dir, ann_file, cache_dir=cache_dir)  # the cache is warm
    cat_to_label = {cat: label for label, cat in dataset.label_to_cat_id.items()}
    grouped: dict[int, list[dict[str, Any]]] = {}
    for r in json.loads(Path(results_file).read_text()):
        grouped.setdefault(int(r["image_id"]), []).append(r)
    outputs = []
    for image_id, rs in grouped.items():
        xywh = torch.tensor([r["bbox"] for r in rs], dtype=torch.float32)
        boxes = torch.cat([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], dim=1)
        outputs.append(({"image_id": image_id},
                        {"boxes": boxes,
                         "labels": torch.tensor([cat_to_label[r["category_id"]] for r in rs]),
                         "scores": torch.tensor([r["score"] for r in rs])}))
    del grouped
    start = time.perf_counter()
    evaluator = CocoEvaluator.from_dataset(dataset)
    with contextlib.redirect_stdout(io.StringIO()):
        for target, output in outputs:
            evaluator.process([target], [output])
        metrics = evaluator.evaluate()
    assert evaluator.coco_eval is not None
    stats = evaluator.coco_eval.stats.copy()
    evaluator.release()
    evaluator.results = []
    del outputs
    return _report(start, stats, {"AP": metrics["AP"]})
