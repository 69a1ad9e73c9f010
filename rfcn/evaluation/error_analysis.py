"""Where detections go wrong: a confusion matrix, the COCO error breakdown and PR curves.

- `confusion_matrix`: counts in the convention of ultralytics/yolov5 ``ConfusionMatrix``,
  ``matrix[predicted, true]`` (rows: predicted class, columns: true class), except that the
  background is index 0 here (rfcn's label 0) where ultralytics puts it last. So row 0 holds
  the ground truth nobody detected (false negatives, "predicted background") and column 0
  the detections on nothing (false positives, "true background"); the diagonal 1..C holds
  the correct detections, the rest of 1..C x 1..C class confusions.
- `coco_error_breakdown`: the Derek Hoiem style false-positive analysis of the MATLAB
  COCO API's ``CocoEval.analyze()`` (cocodataset/cocoapi, MatlabAPI/CocoEval.m), which the
  Python API lacks, rebuilt on pycocotools' COCOeval.
- `precision_recall_curves`: per-class PR curves from an evaluated COCOeval. (CocoEvaluator
  and VOCEvaluator already keep theirs in ``.pr_curves`` after ``evaluate()``.)

Shape shorthand: C = number of foreground classes, G = ground-truth boxes of one image,
D = detections of one image, R = recall thresholds (101), K = categories, A = area ranges.
"""

from __future__ import annotations

import contextlib
import io
import logging
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
from torchvision.ops import box_iou

from rfcn.evaluation.coco import load_results

__all__ = [
    "AREA_NAMES",
    "ERROR_TYPES",
    "coco_error_breakdown",
    "confusion_matrix",
    "confusion_to_dict",
    "precision_recall_curves",
]

logger = logging.getLogger(__name__)

ERROR_TYPES: tuple[str, ...] = ("C75", "C50", "Loc", "Sim", "Oth", "BG", "FN")
AREA_NAMES: tuple[str, ...] = ("all", "small", "medium", "large")


def _np(x: Any, dtype: Any) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=dtype)


def _flag(target: Mapping[str, Any], key: str, n: int) -> np.ndarray:
    value = target.get(key)
    return np.zeros(n, dtype=bool) if value is None else _np(value, bool).reshape(-1)


def _check_labels(labels: np.ndarray, num_classes: int, where: str) -> None:
    if labels.size and (labels.min() < 1 or labels.max() > num_classes):
        raise ValueError(f"{where}: labels must be in 1..{num_classes}, got "
                         f"{labels.min()}..{labels.max()}")


def _greedy_match(iou: np.ndarray, scores: np.ndarray, iou_thresh: float) -> np.ndarray:
    """One-to-one matching of detections to ground truth, highest IoU first (ties: higher
    score, then lower detection index). iou: [G, D]; returns int64 [D], the matched
    ground-truth index or -1."""
    num_gt, num_det = iou.shape
    match = np.full(num_det, -1, dtype=np.int64)
    if num_gt == 0 or num_det == 0:
        return match
    gi, di = np.nonzero(iou >= iou_thresh)
    order = np.lexsort((di, -scores[di], -iou[gi, di]))
    gt_used = np.zeros(num_gt, dtype=bool)
    for g, d in zip(gi[order].tolist(), di[order].tolist(), strict=True):
        if not gt_used[g] and match[d] < 0:
            gt_used[g] = True
            match[d] = g
    return match


def _add_image(
    matrix: np.ndarray,
    gt: Mapping[str, Any],
    det: Mapping[str, Any],
    iou_thresh: float,
    score_thresh: float,
    index: int,
) -> None:
    """Add one image's matches to ``matrix`` [C+1, C+1] in place."""
    num_classes = matrix.shape[0] - 1
    gt_boxes = _np(gt["boxes"], np.float64).reshape(-1, 4)
    gt_labels = _np(gt["labels"], np.int64).reshape(-1)
    ignored = _flag(gt, "iscrowd", len(gt_labels)) | _flag(gt, "difficult", len(gt_labels))
    scores = _np(det["scores"], np.float64).reshape(-1)
    keep = scores >= score_thresh
    det_boxes = _np(det["boxes"], np.float64).reshape(-1, 4)[keep]
    det_labels = _np(det["labels"], np.int64).reshape(-1)[keep]
    scores = scores[keep]
    _check_labels(gt_labels, num_classes, f"gts[{index}]")
    _check_labels(det_labels, num_classes, f"dets[{index}]")
    iou = np.zeros((len(gt_boxes), len(det_boxes)))
    if iou.size:
        iou = box_iou(torch.from_numpy(gt_boxes), torch.from_numpy(det_boxes)).numpy()
    regular_labels = gt_labels[~ignored]
    match = _greedy_match(iou[~ignored], scores, iou_thresh)
    matched = match >= 0
    np.add.at(matrix, (det_labels[matched], regular_labels[match[matched]]), 1)
    missed = np.ones(len(regular_labels), dtype=bool)
    missed[match[matched]] = False
    np.add.at(matrix, (0, regular_labels[missed]), 1)
    on_ignored = (iou[ignored] >= iou_thresh).any(axis=0)
    np.add.at(matrix, (det_labels[~matched & ~on_ignored], 0), 1)


def confusion_matrix(
    gts: Sequence[Mapping[str, Any]],
    dets: Sequence[Mapping[str, Any]],
    num_classes: int,
    iou_thresh: float = 0.5,
    score_thresh: float = 0.3,
) -> np.ndarray:
    """Detection confusion matrix, int64 [C+1, C+1], ``matrix[predicted, true]``, index 0 =
    background (module docstring): row 0 = missed ground truth, column 0 = false positives.

    Per image, detections with ``score >= score_thresh`` are matched to the regular ground
    truth class-agnostically and greedily by IoU (`torchvision.ops.box_iou`, a pair needs
    ``IoU >= iou_thresh``; highest IoU first), each box matched at most once; a match adds
    1 at ``[det label, gt label]``. Crowd and difficult ground truth is ignored: it is never
    missed, and an unmatched detection with ``IoU >= iou_thresh`` to one of them is not a
    false positive (plain IoU, not COCO's crowd intersection-over-detection).

    Args:
        gts: per image, ``boxes`` [G, 4] xyxy, ``labels`` [G] in 1..C, optional ``iscrowd``
            / ``difficult`` bool [G] (Tensors or numpy).
        dets: per image, ``boxes`` [D, 4] xyxy, ``labels`` [D] in 1..C, ``scores`` [D].
        num_classes: C, the number of foreground classes (background not counted).
    """
    if len(gts) != len(dets):
        raise ValueError(f"{len(gts)} ground-truth images but {len(dets)} detection images")
    matrix = np.zeros((num_classes + 1, num_classes + 1), dtype=np.int64)
    for i, (gt, det) in enumerate(zip(gts, dets, strict=True)):
        _add_image(matrix, gt, det, iou_thresh, score_thresh, i)
    return matrix


def confusion_to_dict(
    matrix: np.ndarray, class_names: Sequence[str], iou_thresh: float, score_thresh: float
) -> dict[str, Any]:
    """JSON-ready form of a `confusion_matrix`, with per-class tp / fp / fn.

    ``class_names``: the C foreground names, or C+1 names with the background first (a
    dataset's ``class_names``); index 0 is called "background" either way. fp of class c
    counts detections labelled c that are not a true c (row c off the diagonal), fn the true
    c not detected as c (column c off the diagonal).
    """
    size = matrix.shape[0]
    names = list(class_names)
    if len(names) == size:
        names = names[1:]
    if len(names) != size - 1:
        raise ValueError(f"{len(class_names)} class names for a {size}x{size} matrix")
    names = ["background", *names]
    diag = np.diag(matrix)
    per_class = {
        names[c]: {"tp": int(diag[c]), "fp": int(matrix[c].sum() - diag[c]),
                   "fn": int(matrix[:, c].sum() - diag[c])}
        for c in range(1, size)
    }
    return {
        "convention": "matrix[predicted][true]; index 0 = background: row 0 = missed ground "
                      "truth (false negatives), column 0 = false positives",
        "iou_thresh": float(iou_thresh),
        "score_thresh": float(score_thresh),
        "class_names": names,
        "matrix": np.asarray(matrix).astype(int).tolist(),
        "per_class": per_class,
    }


class _AnalyzeEval(COCOeval):
    """The COCOeval of one Sim / Oth row of analyze(): after pycocotools' own preparation,
    detections are restricted to category ``target``, ground truth to ``keep`` categories,
    and kept ground truth of any other category is ignored. The flag goes on a copy of the
    annotation (``ignore = 1``, what the MATLAB code sets): pycocotools' ``_prepare``
    overwrites an ``ignore`` field with ``iscrowd``, so it cannot be set on the input."""

    def __init__(self, coco_gt: COCO, coco_dt: COCO, target: int, keep: set[int]) -> None:
        super().__init__(coco_gt, coco_dt, iouType="bbox")
        self._target = target
        self._keep = keep

    def _prepare(self) -> None:
        super()._prepare()
        for key, gts in self._gts.items():
            self._gts[key] = [g if g["category_id"] == self._target else {**g, "ignore": 1}
                              for g in gts if g["category_id"] in self._keep]
        for key in self._dts:
            if key[1] != self._target:
                self._dts[key] = []


def _precision(ev: COCOeval, image_ids: list[int], iou_thrs: list[float], use_cats: bool
               ) -> np.ndarray:
    """Evaluate and accumulate quietly at maxDets 100; precision [T, R, K, A], NaN where
    pycocotools has -1 (no ground truth)."""
    p = ev.params
    p.imgIds = list(image_ids)
    p.iouThrs = np.asarray(iou_thrs, dtype=np.float64)
    p.maxDets = [100]
    p.useCats = int(use_cats)
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress
        ev.evaluate()
        ev.accumulate()
    precision = ev.eval["precision"][..., 0]
    return np.where(precision > -1, precision, np.nan)


def _supercategory_groups(coco_gt: COCO, cat_ids: list[int]) -> dict[int, set[int]]:
    """Category id -> ids sharing its supercategory (missing / empty: one shared group)."""
    sup = {c["id"]: c.get("supercategory") or "" for c in coco_gt.loadCats(cat_ids)}
    return {k: {c for c in cat_ids if sup[c] == sup[k]} for k in cat_ids}


def _breakdown_precision(coco_gt: COCO, coco_dt: COCO, image_ids: list[int]
                         ) -> tuple[np.ndarray, list[int], bool]:
    """(precision [7, R, K, A] in ERROR_TYPES order, NaN for no ground truth; category ids;
    whether Sim equals Oth by construction)."""
    cat_ids = sorted(coco_gt.getCatIds())
    base = _precision(COCOeval(coco_gt, coco_dt, iouType="bbox"), image_ids,
                      [0.75, 0.5, 0.1], use_cats=True)
    ps = np.full((len(ERROR_TYPES), *base.shape[1:]), np.nan)
    ps[:3] = base
    groups = _supercategory_groups(coco_gt, cat_ids)
    everything = set(cat_ids)
    sim_is_oth = all(g == everything for g in groups.values())
    selected = set(image_ids)
    for k, cat in enumerate(cat_ids):
        # Images with neither a detection nor a ground truth of `cat` change nothing.
        imgs = sorted(selected & (set(coco_gt.catToImgs.get(cat, []))
                                  | set(coco_dt.catToImgs.get(cat, []))))
        if not imgs:
            continue
        ps[4, :, k] = _precision(_AnalyzeEval(coco_gt, coco_dt, cat, everything), imgs,
                                 [0.1], use_cats=False)[0, :, 0]
        ps[3, :, k] = ps[4, :, k] if groups[cat] == everything else _precision(
            _AnalyzeEval(coco_gt, coco_dt, cat, groups[cat]), imgs, [0.1], False)[0, :, 0]
    defined = ~np.isnan(ps[1])
    ps[5] = np.where(defined, (np.nan_to_num(ps[4]) > 0).astype(np.float64), np.nan)
    ps[6] = np.where(defined, 1.0, np.nan)
    return ps, cat_ids, sim_is_oth


def _mean_or_none(x: np.ndarray) -> float | None:
    return None if x.size == 0 or np.isnan(x).any() else float(x.mean())


def _breakdown_dict(ps: np.ndarray, names: list[str]) -> dict[str, Any]:
    """Per-class and overall APs (mean precision over the recall thresholds) and curves."""
    overall: dict[str, Any] = {}
    overall_curves: dict[str, Any] = {}
    for a, area in enumerate(AREA_NAMES[: ps.shape[3]]):
        valid = ~np.isnan(ps[1, 0, :, a])
        overall[area] = {t: _mean_or_none(ps[i, :, valid, a]) for i, t in enumerate(ERROR_TYPES)}
        overall_curves[area] = {
            t: (ps[i, :, valid, a].mean(axis=0).tolist() if valid.any() else None)
            for i, t in enumerate(ERROR_TYPES)
        }
    per_class = {
        name: {area: {t: _mean_or_none(ps[i, :, k, a]) for i, t in enumerate(ERROR_TYPES)}
               for a, area in enumerate(AREA_NAMES[: ps.shape[3]])}
        for k, name in enumerate(names)
    }
    per_class_curves = {
        name: {t: (None if np.isnan(ps[i, :, k, 0]).any() else ps[i, :, k, 0].tolist())
               for i, t in enumerate(ERROR_TYPES)}
        for k, name in enumerate(names)
    }
    return {"overall": overall, "per_class": per_class,
            "curves": {"overall": overall_curves, "per_class": per_class_curves}}


def coco_error_breakdown(
    coco_gt: COCO,
    coco_results: list[dict[str, Any]],
    class_names: Mapping[int, str] | None = None,
    image_ids: Sequence[int] | None = None,
) -> dict[str, Any]:
    """The error breakdown of MATLAB ``CocoEval.analyze()`` (box detections), JSON-ready.

    What is followed (cocoapi MatlabAPI/CocoEval.m ``analyze``), all at maxDets 100 and the
    101 recall thresholds, for the areas all / small / medium / large:
      C75, C50, Loc: COCOeval precision at IoU 0.75, 0.5, 0.1 (categories used).
      Sim: IoU 0.1, detections of category k only, ground truth of k's supercategory only
        (categories off, as ``useCats=0``) with the other categories' boxes ignored, so a
        detection on a similar object is neither a true nor a false positive.
      Oth: the same with all ground truth kept and every other category's box ignored.
      BG: 1 wherever Oth precision > 0 (all remaining false positives removed).
      FN: 1 (every missed object found).
    Each type's AP is its mean precision over the recall thresholds; "overall" averages the
    categories. Ignoring is the MATLAB ``ignore`` flag (plain IoU, matched at most once),
    not the crowd flag that Python ports such as mmdetection's coco_error_analysis.py set
    (it changes the IoU to intersection over detection area and allows repeated matches),
    nor their relabelling of other categories' boxes (which would count them as positives).

    Deviations: categories without ground truth (in an area) get None and are left out of
    the overall means, as COCO's AP leaves them out (MATLAB counts them as 0), so overall C75
    and C50 equal COCOeval's AP75 and AP50. Images without a detection or box of category k
    are skipped in its Sim/Oth runs (they change nothing). Missing or empty supercategories
    form one shared group; when all categories share one group (or there is one category),
    Sim equals Oth (``sim_equals_oth`` in the result).

    Args:
        coco_gt: the ground truth (e.g. ``dataset.coco``); its annotation dicts get the keys
            pycocotools' COCOeval always adds (``ignore``, ``_ignore``).
        coco_results: COCO results (``image_id``, ``category_id``, ``bbox`` xywh, ``score``),
            e.g. ``CocoEvaluator.results``.
        class_names: category id -> name; default the names in ``coco_gt``.
        image_ids: the images evaluated (default all of ``coco_gt``).

    Returns:
        ``error_types``, ``areas``, ``recall`` (R thresholds), ``num_images``,
        ``num_detections``, ``sim_equals_oth``, ``overall[area][type]`` AP,
        ``per_class[name][area][type]`` AP (None without ground truth), ``curves`` with
        ``overall[area][type]`` and ``per_class[name][type]`` (area all) precision lists [R].
    """
    ids = sorted(coco_gt.getImgIds()) if image_ids is None else sorted({int(i) for i in image_ids})
    coco_dt = load_results(coco_gt, list(coco_results))
    ps, cat_ids, sim_is_oth = _breakdown_precision(coco_gt, coco_dt, ids)
    names = [class_names[c] if class_names is not None else str(coco_gt.cats[c]["name"])
             for c in cat_ids]
    out = {
        "error_types": list(ERROR_TYPES),
        "areas": list(AREA_NAMES[: ps.shape[3]]),
        "recall": np.linspace(0.0, 1.0, ps.shape[1]).tolist(),
        "num_images": len(ids),
        "num_detections": len(coco_results),
        "sim_equals_oth": sim_is_oth,
        **_breakdown_dict(ps, names),
    }
    logger.info("COCO error breakdown (area all): %s", out["overall"].get("all"))
    return out


def precision_recall_curves(
    coco_eval: COCOeval,
    class_names: Mapping[int, str] | None = None,
    iou_thresh: float = 0.5,
    area: str = "all",
    max_dets: int = 100,
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per-class PR curves of an evaluated and accumulated COCOeval (categories used).

    Returns class name -> (recall float [R], precision float [R] clipped to [0, 1]) from
    ``coco_eval.eval["precision"][T at iou_thresh, :, k, area, max_dets]`` over the R = 101
    recall thresholds, the same curves as ``CocoEvaluator.pr_curves``; categories without
    ground truth are left out. ``class_names``: category id -> name (default coco_gt's).
    """
    p = coco_eval.params
    if not coco_eval.eval or not p.useCats:
        raise ValueError("precision_recall_curves needs a COCOeval after accumulate(), "
                         "with categories used")
    t = np.nonzero(np.isclose(np.asarray(p.iouThrs), iou_thresh))[0]
    if t.size == 0:
        raise ValueError(f"IoU {iou_thresh} is not among the evaluated {list(p.iouThrs)}")
    a, m = list(p.areaRngLbl).index(area), list(p.maxDets).index(max_dets)
    precision = coco_eval.eval["precision"]
    recall = np.asarray(p.recThrs, dtype=np.float64)
    curves: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for k, cat in enumerate(p.catIds):
        curve = precision[int(t[0]), :, k, a, m]
        if (curve > -1).any():
            name = (class_names[cat] if class_names is not None
                    else str(coco_eval.cocoGt.cats[cat]["name"]))
            curves[name] = (recall.copy(), np.clip(curve, 0.0, 1.0))
    return curves
