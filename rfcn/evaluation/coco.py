"""COCO-style box evaluation through pycocotools' COCOeval on the dataset's own annotations.

Predictions are converted to the COCO results format (`[x, y, w, h]`, original category ids)
and scored against the ground-truth JSON, so crowd regions, area ranges and image ids are
handled exactly as COCOeval handles them.
"""

from __future__ import annotations

import contextlib
import copy
import io
import logging
import math
import time
from collections.abc import Callable
from typing import Any

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
from torch import Tensor

from rfcn.utils.distributed import all_gather_object, is_main_process

logger = logging.getLogger(__name__)

COCO_METRIC_NAMES: tuple[str, ...] = ("AP", "AP50", "AP75", "APs", "APm", "APl")


def detections_to_coco_results(
    image_id: int,
    output: dict[str, Tensor],
    label_to_cat_id: dict[int, int],
) -> list[dict[str, Any]]:
    """One image's model output → COCO result dicts.

    Args:
        output: `boxes` Tensor[N, 4] xyxy pixels, `labels` int64 Tensor[N] in 1..C,
            `scores` Tensor[N].
        label_to_cat_id: contiguous label → the dataset's original category id.
    """
    boxes = output["boxes"].detach().cpu().double().numpy()
    scores = output["scores"].detach().cpu().double().numpy()
    labels = output["labels"].detach().cpu().numpy()
    results = []
    for (x1, y1, x2, y2), score, label in zip(boxes, scores, labels, strict=True):
        results.append(
            {
                "image_id": int(image_id),
                "category_id": int(label_to_cat_id[int(label)]),
                "bbox": [float(x1), float(y1), float(x2 - x1), float(y2 - y1)],
                "score": float(score),
            }
        )
    return results


def load_results(coco_gt: COCO, results: list[dict[str, Any]]) -> COCO:
    """The detections as a COCO object for COCOeval(iouType="bbox"): what pycocotools'
    `loadRes` makes of box results (area = w * h, ids from 1, iscrowd 0) without deep-copying
    `results`, changing them, or building the polygon of every box (bbox evaluation reads
    none). `results` may be empty.

    Raises:
        ValueError: a detection names an image that is not in `coco_gt`.
    """
    res = COCO()
    res.dataset["images"] = list(coco_gt.dataset.get("images", []))
    res.dataset["categories"] = copy.deepcopy(coco_gt.dataset.get("categories", []))
    known = set(coco_gt.getImgIds())
    anns = []
    for i, r in enumerate(results):
        if r["image_id"] not in known:
            raise ValueError(f"detections do not belong to the ground-truth images: detection "
                             f"{i} is for image {r['image_id']}")
        bbox = r["bbox"]
        anns.append({"image_id": r["image_id"], "category_id": r["category_id"], "bbox": bbox,
                     "score": r["score"], "area": bbox[2] * bbox[3], "id": i + 1,
                     "iscrowd": 0})
    res.dataset["annotations"] = anns
    with contextlib.redirect_stdout(io.StringIO()):  # "creating index..."
        res.createIndex()
    return res


def _nan_to_none(value: float) -> float | None:
    return None if value is None or math.isnan(value) or value < 0 else float(value)


class CocoEvaluator:
    """Box AP via COCOeval. Results keyed AP, AP50, AP75, APs, APm, APl (fractions) + per_class.

    Undefined values (e.g. APl on a split without large objects, a class without ground truth)
    are reported as None. After `evaluate()`, `self.results` holds the COCO results list
    (original category ids) and `self.pr_curves` maps class name → (recall, precision) arrays
    at IoU 0.5, all areas, 100 detections.

    Memory: the ground-truth index is built when first needed (`coco_gt` may be a function
    that builds it, e.g. the dataset's) and, like the COCOeval state, dropped by `release()`
    (the training loop releases after each evaluation; tools/eval.py after its analysis).

    Args:
        coco_gt: the ground truth, or a function returning it.
        image_ids: every image of the evaluation set; an image never processed (unreadable)
            is still scored, with no detections, so a broken file cannot raise recall (a
            warning gives the count). None: only the processed images are scored.
        on_release: called by `release()` (e.g. the dataset's `release_coco`).
    """

    def __init__(
        self,
        coco_gt: COCO | Callable[[], COCO],
        label_to_cat_id: dict[int, int],
        class_names: list[str],
        image_ids: list[int] | None = None,
        on_release: Callable[[], None] | None = None,
    ) -> None:
        self._gt_source = coco_gt
        self._gt: COCO | None = coco_gt if isinstance(coco_gt, COCO) else None
        self._on_release = on_release
        self.label_to_cat_id = {int(k): int(v) for k, v in label_to_cat_id.items()}
        self.class_names = list(class_names)
        self.image_ids = None if image_ids is None else [int(i) for i in image_ids]
        self.results: list[dict[str, Any]] = []
        self.pr_curves: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        self.coco_eval: COCOeval | None = None  # after evaluate(), when there were detections
        self.num_unprocessed = 0
        self.reset()

    @classmethod
    def from_dataset(cls, dataset: Any) -> CocoEvaluator:
        """An evaluator scoring every image of a CocoDetection-like dataset (`coco`,
        `label_to_cat_id`, `class_names`, `image_ids`)."""
        return cls(lambda: dataset.coco, dataset.label_to_cat_id, dataset.class_names,
                   list(dataset.image_ids), on_release=dataset.release_coco)

    @property
    def coco_gt(self) -> COCO:
        """The ground-truth index (built on first use)."""
        if self._gt is None:
            assert callable(self._gt_source)
            self._gt = self._gt_source()
        return self._gt

    def release(self) -> None:
        """Drop the COCOeval state and the ground-truth index (rebuilt when needed again);
        `results` and the metrics stay."""
        self.coco_eval = None
        if not isinstance(self._gt_source, COCO):
            self._gt = None
            if self._on_release is not None:
                self._on_release()

    def reset(self) -> None:
        self._predictions: list[dict[str, Any]] = []
        self._image_ids: list[int] = []

    def process(self, targets: list[dict[str, Any]], outputs: list[dict[str, Tensor]]) -> None:
        for target, output in zip(targets, outputs, strict=True):
            image_id = int(target["image_id"])
            self._image_ids.append(image_id)
            self._predictions.extend(
                detections_to_coco_results(image_id, output, self.label_to_cat_id)
            )

    def evaluate(self) -> dict[str, Any]:
        gathered = all_gather_object((self._image_ids, self._predictions))
        if not is_main_process():
            return {}
        image_ids = sorted({i for ids, _ in gathered for i in ids})
        self.results = [p for _, preds in gathered for p in preds]
        if self.image_ids is not None:
            processed = set(image_ids)
            self.num_unprocessed = sum(1 for i in set(self.image_ids) if i not in processed)
            if self.num_unprocessed:
                logger.warning(
                    "COCO evaluation: %d of %d images were not processed (unreadable); their "
                    "ground truth counts as missed",
                    self.num_unprocessed,
                    len(set(self.image_ids)),
                )
            image_ids = sorted(set(self.image_ids))
        return self._evaluate(image_ids, self.results)

    def _run_cocoeval(self, image_ids: list[int], results: list[dict[str, Any]]) -> COCOeval:
        return _cocoeval(self.coco_gt, results, image_ids)

    def _evaluate(self, image_ids: list[int], results: list[dict[str, Any]]) -> dict[str, Any]:
        cat_to_name = {
            cat_id: self.class_names[label] for label, cat_id in self.label_to_cat_id.items()
        }
        self.pr_curves = {}
        self.coco_eval = None
        if not image_ids:
            logger.warning("COCO evaluation: no images were processed")
            return {**{k: 0.0 for k in COCO_METRIC_NAMES}, "per_class": {}, "num_images": 0}
        if not results:
            logger.warning("COCO evaluation: no detections; every AP is 0")
            per_class = {
                name: (0.0 if self.coco_gt.getAnnIds(imgIds=image_ids, catIds=[cid]) else None)
                for cid, name in cat_to_name.items()
            }
            return {
                **{k: 0.0 for k in COCO_METRIC_NAMES},
                "per_class": per_class,
                "num_images": len(image_ids),
            }
        coco_eval = self._run_cocoeval(image_ids, results)
        self.coco_eval = coco_eval
        stats = coco_eval.stats
        metrics: dict[str, Any] = {
            name: _nan_to_none(float(stats[i])) for i, name in enumerate(COCO_METRIC_NAMES)
        }
        # precision: [T IoUs, R recall thresholds, K categories, A areas, M max-dets]
        precision = coco_eval.eval["precision"]
        recall_thresholds = np.asarray(coco_eval.params.recThrs)
        per_class: dict[str, float | None] = {}
        for k_idx, cat_id in enumerate(coco_eval.params.catIds):
            if cat_id not in cat_to_name:
                continue
            name = cat_to_name[cat_id]
            p = precision[:, :, k_idx, 0, -1]
            valid = p[p > -1]
            per_class[name] = float(valid.mean()) if valid.size else None
            p50 = precision[0, :, k_idx, 0, -1]
            if (p50 > -1).any():
                self.pr_curves[name] = (recall_thresholds.copy(), np.clip(p50, 0.0, 1.0))
        metrics["per_class"] = per_class
        metrics["num_images"] = len(image_ids)
        return metrics


def _cocoeval(coco_gt: COCO, results: list[dict[str, Any]], image_ids: list[int]) -> COCOeval:
    """COCOeval (bbox) of `results` on `image_ids`, evaluated, accumulated and summarised,
    with what it prints and how long each part took in the log."""
    started = time.perf_counter()
    coco_dt = load_results(coco_gt, results)
    logger.info("COCO evaluation: %d detections on %d images (matching ...)", len(results),
                len(image_ids))
    log = io.StringIO()
    with contextlib.redirect_stdout(log):
        coco_eval = COCOeval(coco_gt, coco_dt, iouType="bbox")
        coco_eval.params.imgIds = image_ids
        coco_eval.evaluate()
        matched = time.perf_counter()
        coco_eval.accumulate()
        coco_eval.summarize()
    logger.info("COCOeval (matching %.1fs, accumulating %.1fs):\n%s", matched - started,
                time.perf_counter() - matched, log.getvalue().rstrip())
    return coco_eval


def format_coco_table(metrics: dict[str, Any]) -> str:
    """The COCO AP table as text, per-class AP below it; values are fractions of 1, the units
    of metrics.json (AP 0.512 = 51.2 %), as the header says."""
    header = "| " + " | ".join(f"{k:>6}" for k in COCO_METRIC_NAMES) + " |"
    rule = "|" + "|".join("-" * 8 for _ in COCO_METRIC_NAMES) + "|"

    def fmt(v: Any) -> str:
        return f"{v:6.4f}" if isinstance(v, int | float) else f"{'-':>6}"

    row = "| " + " | ".join(fmt(metrics.get(k)) for k in COCO_METRIC_NAMES) + " |"
    lines = ["COCO box AP (fractions of 1, as in metrics.json)", header, rule, row]
    per_class = metrics.get("per_class") or {}
    if per_class:
        width = max(len(n) for n in per_class)
        lines.append("")
        lines.append(f"{'class':<{width}} | AP")
        for name, ap in per_class.items():
            lines.append(f"{name:<{width}} | {fmt(ap).strip()}")
    return "\n".join(lines)
