"""PASCAL VOC detection mAP, computed as py-faster-rcnn's `voc_eval` port of the devkit.

What is followed, precisely:
- Coordinates. Inside rfcn boxes are continuous pixels; a VOC XML box `(xmin, ymin, xmax,
  ymax)` (1-based, inclusive) is `(xmin - 1, ymin - 1, xmax, ymax)` (rfcn.data.voc). For
  scoring, ground truth and detections go back to the devkit's convention, `(x1 + 1, y1 + 1,
  x2, y2)` (detectron2 writes its results files the same way), so the ground-truth boxes are
  the XML's own numbers, and IoU uses the devkit's inclusive widths `x2 - x1 + 1`.
- A detection matches when IoU > 0.5 (py-faster-rcnn's `ovmax > ovthresh`; the MATLAB devkit
  uses `>=`, which differs only on exact ties). "Difficult" ground truth is neither a true nor
  a false positive and does not count towards recall; duplicates are false positives.
- `mAP07` is the 11-point interpolated AP (VOC2007 devkit), `mAP` the area under the monotone
  precision envelope (VOC2010+ devkit).
- Classes without any non-difficult ground truth are left out of the means (py-faster-rcnn
  would divide by zero and report NaN for them).
- Every image of the evaluation set counts: the ground truth of an image that could not be
  read (so has no detections) still counts, as the devkit counts every image of the set.

Shape shorthand: G ground-truth boxes of one class in one image, D detections of one class.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
from torch import Tensor

from rfcn.utils.distributed import all_gather_object, is_main_process

logger = logging.getLogger(__name__)

VOC_METRIC_NAMES: tuple[str, ...] = ("mAP", "mAP07", "AP50")


def voc_ap(rec: np.ndarray, prec: np.ndarray, use_07_metric: bool = False) -> float:
    """AP from recall/precision arrays ordered by decreasing confidence (py-faster-rcnn)."""
    if use_07_metric:
        ap = 0.0
        for t in np.arange(0.0, 1.1, 0.1):
            p = 0.0 if np.sum(rec >= t) == 0 else float(np.max(prec[rec >= t]))
            ap += p / 11.0
        return ap
    mrec = np.concatenate(([0.0], rec, [1.0]))
    mpre = np.concatenate(([0.0], prec, [0.0]))
    for i in range(mpre.size - 1, 0, -1):
        mpre[i - 1] = max(mpre[i - 1], mpre[i])
    i = np.where(mrec[1:] != mrec[:-1])[0]
    return float(np.sum((mrec[i + 1] - mrec[i]) * mpre[i + 1]))


def _devkit_iou(gt_boxes: np.ndarray, bb: np.ndarray) -> np.ndarray:
    """IoU of one box with float[G, 4] boxes, inclusive pixels (widths x2 - x1 + 1)."""
    ixmin = np.maximum(gt_boxes[:, 0], bb[0])
    iymin = np.maximum(gt_boxes[:, 1], bb[1])
    ixmax = np.minimum(gt_boxes[:, 2], bb[2])
    iymax = np.minimum(gt_boxes[:, 3], bb[3])
    iw = np.maximum(ixmax - ixmin + 1.0, 0.0)
    ih = np.maximum(iymax - iymin + 1.0, 0.0)
    inters = iw * ih
    uni = (
        (bb[2] - bb[0] + 1.0) * (bb[3] - bb[1] + 1.0)
        + (gt_boxes[:, 2] - gt_boxes[:, 0] + 1.0) * (gt_boxes[:, 3] - gt_boxes[:, 1] + 1.0)
        - inters
    )
    return inters / uni


def voc_eval_class(
    gt: dict[int, tuple[np.ndarray, np.ndarray]],
    det_image_ids: np.ndarray,
    det_scores: np.ndarray,
    det_boxes: np.ndarray,
    iou_thresh: float = 0.5,
) -> tuple[np.ndarray, np.ndarray, int]:
    """Match one class's detections to its ground truth, in the devkit's inclusive pixel
    convention (boxes as the XML / results files hold them, widths `x2 - x1 + 1`).

    Args:
        gt: image id → (boxes float[G, 4] xyxy, difficult bool[G]); every evaluated image
            should appear (with empty arrays when it has no box of this class).
        det_image_ids: int[D]; det_scores: float[D]; det_boxes: float[D, 4] xyxy.

    Returns:
        (recall float[D], precision float[D], number of non-difficult ground-truth boxes),
        in order of decreasing score.
    """
    npos = int(sum(int((~difficult).sum()) for _, difficult in gt.values()))
    detected = {img: np.zeros(len(boxes), dtype=bool) for img, (boxes, _) in gt.items()}
    # A stable sort makes ties deterministic (the MATLAB devkit's sort is stable too).
    order = np.argsort(-det_scores, kind="mergesort")
    det_boxes = det_boxes[order]
    det_image_ids = det_image_ids[order]
    nd = len(order)
    tp = np.zeros(nd)
    fp = np.zeros(nd)
    for d in range(nd):
        img = int(det_image_ids[d])
        bb = det_boxes[d].astype(float)
        gt_boxes, difficult = gt.get(img, (np.zeros((0, 4)), np.zeros(0, dtype=bool)))
        ovmax = -np.inf
        jmax = -1
        if gt_boxes.size > 0:
            overlaps = _devkit_iou(gt_boxes, bb)
            ovmax = float(np.max(overlaps))
            jmax = int(np.argmax(overlaps))
        if ovmax > iou_thresh:
            if not difficult[jmax]:
                if not detected[img][jmax]:
                    tp[d] = 1.0
                    detected[img][jmax] = True
                else:
                    fp[d] = 1.0
        else:
            fp[d] = 1.0
    fp = np.cumsum(fp)
    tp = np.cumsum(tp)
    rec = tp / float(npos) if npos > 0 else np.zeros(nd)
    prec = tp / np.maximum(tp + fp, np.finfo(np.float64).eps)
    return rec, prec, npos


# continuous pixels (rfcn) -> the devkit's 1-based inclusive convention
_TO_DEVKIT = np.array([1.0, 1.0, 0.0, 0.0])

GroundTruth = tuple[int, np.ndarray, np.ndarray, np.ndarray]  # image id, boxes, labels, difficult


def ground_truth_of(dataset: Any) -> list[GroundTruth]:
    """Every image's ground truth from `dataset.get_annotation` (no image is decoded)."""
    out = []
    for index in range(len(dataset)):
        target = dataset.get_annotation(index)
        out.append(_ground_truth(target))
    return out


def _ground_truth(target: dict[str, Any]) -> GroundTruth:
    boxes = np.asarray(target["boxes"], dtype=np.float64).reshape(-1, 4)
    labels = np.asarray(target["labels"], dtype=np.int64).reshape(-1)
    difficult = target.get("difficult")
    difficult = (
        np.zeros(len(labels), dtype=bool)
        if difficult is None
        else np.asarray(difficult, dtype=bool).reshape(-1)
    )
    return int(target["image_id"]), boxes, labels, difficult


class VOCEvaluator:
    """VOC mAP: keys `mAP` (area), `mAP07` (11-point), `per_class` (area AP) and
    `per_class_07`. Also reports `AP50` (= mAP) so tables that expect COCO's AP50 have a
    value. Classes without any non-difficult ground truth are None and left out of the means.

    Args:
        class_names: background first.
        ground_truth: every image of the evaluation set (`ground_truth_of(dataset)`); images
            that were never processed (unreadable files) keep their ground truth, counted as
            missed, and a warning says how many. None: the ground truth comes from the targets
            passed to `process` (only the processed images count).

    Boxes (targets and detections) are continuous pixels, as everywhere in rfcn; they are
    scored in the devkit's convention (module docstring).
    """

    def __init__(
        self,
        class_names: list[str],
        iou_thresh: float = 0.5,
        ground_truth: list[GroundTruth] | None = None,
    ) -> None:
        self.class_names = list(class_names)
        self.iou_thresh = iou_thresh
        self.ground_truth = ground_truth
        self.pr_curves: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        # after evaluate(): every rank's (image id, boxes, labels, scores)
        self.detections: list[tuple[int, np.ndarray, np.ndarray, np.ndarray]] = []
        self.num_unprocessed = 0
        self.reset()

    @classmethod
    def from_dataset(cls, dataset: Any, iou_thresh: float = 0.5) -> VOCEvaluator:
        """An evaluator scoring every image of `dataset` (read or not)."""
        return cls(dataset.class_names, iou_thresh, ground_truth_of(dataset))

    def release(self) -> None:
        """Nothing to free: the ground truth is the dataset's own records."""

    def reset(self) -> None:
        self._gt: list[tuple[int, np.ndarray, np.ndarray, np.ndarray]] = []
        self._dets: list[tuple[int, np.ndarray, np.ndarray, np.ndarray]] = []

    def process(self, targets: list[dict[str, Any]], outputs: list[dict[str, Tensor]]) -> None:
        for target, output in zip(targets, outputs, strict=True):
            gt = _ground_truth(target)
            image_id = gt[0]
            self._gt.append(gt)
            self._dets.append(
                (
                    image_id,
                    output["boxes"].detach().cpu().double().numpy().reshape(-1, 4),
                    output["labels"].detach().cpu().numpy().reshape(-1),
                    output["scores"].detach().cpu().double().numpy().reshape(-1),
                )
            )

    def evaluate(self) -> dict[str, Any]:
        gathered = all_gather_object((self._gt, self._dets))
        if not is_main_process():
            return {}
        gts = [g for gt, _ in gathered for g in gt]
        self.detections = [d for _, det in gathered for d in det]
        if self.ground_truth is not None:
            processed = {g[0] for g in gts}
            gts = list(self.ground_truth)
            self.num_unprocessed = sum(1 for g in gts if g[0] not in processed)
            if self.num_unprocessed:
                logger.warning(
                    "VOC evaluation: %d of %d images were not processed (unreadable); their "
                    "ground truth counts as missed",
                    self.num_unprocessed,
                    len(gts),
                )
        return self._evaluate(gts, self.detections)

    def _evaluate(
        self,
        gts: list[tuple[int, np.ndarray, np.ndarray, np.ndarray]],
        dets: list[tuple[int, np.ndarray, np.ndarray, np.ndarray]],
    ) -> dict[str, Any]:
        per_class: dict[str, float | None] = {}
        per_class_07: dict[str, float | None] = {}
        self.pr_curves = {}
        gts = [(img, boxes + _TO_DEVKIT, labels, diff) for img, boxes, labels, diff in gts]
        dets = [(img, boxes + _TO_DEVKIT, labels, s) for img, boxes, labels, s in dets]
        for label in range(1, len(self.class_names)):
            name = self.class_names[label]
            gt = {
                img: (boxes[labels == label], difficult[labels == label])
                for img, boxes, labels, difficult in gts
            }
            sel = [(img, b[lab == label], s[lab == label]) for img, b, lab, s in dets]
            det_ids = np.concatenate(
                [np.full(len(s), img, dtype=np.int64) for img, _, s in sel] or [np.zeros(0)]
            ).astype(np.int64)
            det_boxes = np.concatenate([b for _, b, _ in sel] or [np.zeros((0, 4))]).reshape(-1, 4)
            det_scores = np.concatenate([s for _, _, s in sel] or [np.zeros(0)])
            rec, prec, npos = voc_eval_class(gt, det_ids, det_scores, det_boxes, self.iou_thresh)
            if npos == 0:
                per_class[name] = None
                per_class_07[name] = None
                continue
            per_class[name] = voc_ap(rec, prec, use_07_metric=False)
            per_class_07[name] = voc_ap(rec, prec, use_07_metric=True)
            if len(rec):
                self.pr_curves[name] = (rec, prec)
        valid = [v for v in per_class.values() if v is not None]
        valid07 = [v for v in per_class_07.values() if v is not None]
        mean_ap = float(np.mean(valid)) if valid else 0.0
        return {
            "mAP": mean_ap,
            "mAP07": float(np.mean(valid07)) if valid07 else 0.0,
            "AP50": mean_ap,
            "per_class": per_class,
            "per_class_07": per_class_07,
            "num_images": len({g[0] for g in gts}),
        }


def format_voc_table(metrics: dict[str, Any]) -> str:
    """VOC mAP (area and 11-point) and per-class AP as text; values are fractions of 1, the
    units of metrics.json, as the first line says."""

    def fmt(v: Any) -> str:
        return f"{v:.4f}" if isinstance(v, int | float) else "-"

    lines = [
        "VOC mAP (fractions of 1, as in metrics.json)",
        f"mAP (area) = {fmt(metrics.get('mAP'))}   mAP07 (11-point) = {fmt(metrics.get('mAP07'))}",
    ]
    per_class = metrics.get("per_class") or {}
    per_class_07 = metrics.get("per_class_07") or {}
    if per_class:
        width = max(len(n) for n in per_class)
        lines.append(f"{'class':<{width}} | AP     | AP07")
        for name, ap in per_class.items():
            lines.append(f"{name:<{width}} | {fmt(ap):<6} | {fmt(per_class_07.get(name))}")
    return "\n".join(lines)
