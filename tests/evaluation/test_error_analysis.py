"""Confusion matrix (against a plain Python loop), the COCO error breakdown (against cases
whose every number is known by hand) and COCO PR curves."""

from __future__ import annotations

import contextlib
import copy
import io
import json

import numpy as np
import pytest
import torch
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from rfcn.evaluation.coco import CocoEvaluator
from rfcn.evaluation.error_analysis import (
    ERROR_TYPES,
    coco_error_breakdown,
    confusion_matrix,
    confusion_to_dict,
    precision_recall_curves,
)

EPS = 1e-6  # pycocotools divides by tp + fp + eps


# ---------------------------------------------------------------- confusion matrix


def _iou(a: list[float], b: list[float]) -> float:
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def _reference(gts, dets, num_classes, iou_thresh, score_thresh) -> np.ndarray:
    """The documented algorithm, one box at a time."""
    m = [[0] * (num_classes + 1) for _ in range(num_classes + 1)]
    for gt, det in zip(gts, dets, strict=True):
        g_boxes, g_labels = gt["boxes"].tolist(), gt["labels"].tolist()
        ignored = [bool(c or d) for c, d in zip(gt["iscrowd"].tolist(),
                                                gt["difficult"].tolist(), strict=True)]
        kept = [i for i, s in enumerate(det["scores"].tolist()) if s >= score_thresh]
        d_boxes = [det["boxes"][i].tolist() for i in kept]
        d_labels = [int(det["labels"][i]) for i in kept]
        d_scores = [float(det["scores"][i]) for i in kept]
        pairs = []
        for g in range(len(g_boxes)):
            for d in range(len(d_boxes)):
                v = _iou(g_boxes[g], d_boxes[d])
                if not ignored[g] and v >= iou_thresh:
                    pairs.append((-v, -d_scores[d], d, g))
        gt_of_det: dict[int, int] = {}
        used: set[int] = set()
        for _, _, d, g in sorted(pairs):
            if g not in used and d not in gt_of_det:
                used.add(g)
                gt_of_det[d] = g
        for d, g in gt_of_det.items():
            m[d_labels[d]][g_labels[g]] += 1
        for g in range(len(g_boxes)):
            if not ignored[g] and g not in used:
                m[0][g_labels[g]] += 1
        for d in range(len(d_boxes)):
            on_ignored = any(ignored[g] and _iou(g_boxes[g], d_boxes[d]) >= iou_thresh
                             for g in range(len(g_boxes)))
            if d not in gt_of_det and not on_ignored:
                m[d_labels[d]][0] += 1
    return np.array(m)


def _random_image(rng: np.random.Generator, num_classes: int) -> tuple[dict, dict]:
    g = int(rng.integers(0, 8))
    xy = rng.uniform(0, 200, (g, 2))
    gt_boxes = np.hstack([xy, xy + rng.uniform(10, 80, (g, 2))])
    # detections: jittered copies of some ground truth (with random labels) plus clutter
    pick = rng.random(g) < 0.8
    copies = gt_boxes[pick] + rng.normal(0, 6, (int(pick.sum()), 4))
    k = int(rng.integers(0, 4))
    cxy = rng.uniform(0, 200, (k, 2))
    clutter = np.hstack([cxy, cxy + rng.uniform(10, 80, (k, 2))])
    det_boxes = np.vstack([copies, clutter]).reshape(-1, 4)
    det_boxes[:, 2:] = np.maximum(det_boxes[:, 2:], det_boxes[:, :2] + 1)
    n = len(det_boxes)
    gt = {"boxes": torch.tensor(gt_boxes, dtype=torch.float32).reshape(-1, 4),
          "labels": torch.from_numpy(rng.integers(1, num_classes + 1, g)),
          "iscrowd": torch.from_numpy(rng.random(g) < 0.1),
          "difficult": torch.from_numpy(rng.random(g) < 0.1)}
    det = {"boxes": torch.tensor(det_boxes, dtype=torch.float32),
           "labels": torch.from_numpy(rng.integers(1, num_classes + 1, n)),
           "scores": torch.from_numpy(rng.random(n)).float()}
    return gt, det


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_confusion_matrix_matches_reference_loop(seed: int) -> None:
    rng = np.random.default_rng(seed)
    num_classes = 4
    images = [_random_image(rng, num_classes) for _ in range(30)]
    gts, dets = [g for g, _ in images], [d for _, d in images]
    for iou_thresh, score_thresh in ((0.5, 0.3), (0.3, 0.0), (0.7, 0.5)):
        got = confusion_matrix(gts, dets, num_classes, iou_thresh, score_thresh)
        want = _reference(gts, dets, num_classes, iou_thresh, score_thresh)
        np.testing.assert_array_equal(got, want)
        # every regular ground-truth box lands in exactly one cell of its column
        for c in range(1, num_classes + 1):
            regular = sum(int((g["labels"][~(g["iscrowd"] | g["difficult"])] == c).sum())
                          for g in gts)
            assert got[:, c].sum() == regular
        assert got[:, 1:].sum() > got[0, 1:].sum()  # something was matched


def _gt(boxes, labels, crowd=None, difficult=None) -> dict:
    n = len(labels)
    return {"boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
            "labels": torch.tensor(labels, dtype=torch.int64),
            "iscrowd": torch.tensor(crowd if crowd is not None else [False] * n),
            "difficult": torch.tensor(difficult if difficult is not None else [False] * n)}


def _det(boxes, labels, scores) -> dict:
    return {"boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
            "labels": torch.tensor(labels, dtype=torch.int64),
            "scores": torch.tensor(scores, dtype=torch.float32)}


BOX_A, BOX_B, BOX_C = [10, 10, 60, 60], [100, 100, 180, 150], [200, 20, 240, 90]


def test_perfect_detections_are_diagonal() -> None:
    gt = _gt([BOX_A, BOX_B, BOX_C], [1, 2, 3])
    det = _det([BOX_A, BOX_B, BOX_C], [1, 2, 3], [0.9, 0.8, 0.7])
    m = confusion_matrix([gt, gt], [det, det], num_classes=3)
    np.testing.assert_array_equal(m, np.diag([0, 2, 2, 2]))


def test_swap_missed_and_false_positive_cells() -> None:
    gt = _gt([BOX_A, BOX_B], [1, 2])
    # class swap on A (a 2 on a true 1), B missed, a false positive of class 3 elsewhere
    det = _det([BOX_A, BOX_C, BOX_B], [2, 3, 2], [0.9, 0.8, 0.1])
    m = confusion_matrix([gt], [det], num_classes=3, score_thresh=0.3)
    want = np.zeros((4, 4), dtype=np.int64)
    want[2, 1] = 1  # predicted 2, true 1
    want[0, 2] = 1  # true 2 missed (its detection is under the score threshold)
    want[3, 0] = 1  # predicted 3 on background
    np.testing.assert_array_equal(m, want)
    d = confusion_to_dict(m, ["__background__", "a", "b", "c"], 0.5, 0.3)
    assert json.loads(json.dumps(d)) == d
    assert d["class_names"] == ["background", "a", "b", "c"]
    assert d["per_class"]["a"] == {"tp": 0, "fp": 0, "fn": 1}
    assert d["per_class"]["b"] == {"tp": 0, "fp": 1, "fn": 1}
    assert d["per_class"]["c"] == {"tp": 0, "fp": 1, "fn": 0}
    assert confusion_to_dict(m, ["a", "b", "c"], 0.5, 0.3) == d


def test_crowd_and_difficult_are_ignored() -> None:
    gt = _gt([BOX_A, BOX_B, BOX_C], [1, 1, 2], crowd=[False, True, False],
             difficult=[False, False, True])
    det = _det([BOX_A, BOX_B, BOX_C], [1, 1, 2], [0.9, 0.9, 0.9])
    m = confusion_matrix([gt], [det], num_classes=2)
    want = np.zeros((3, 3), dtype=np.int64)
    want[1, 1] = 1  # only A counts; detections on the crowd / difficult boxes are no FP
    np.testing.assert_array_equal(m, want)
    # a duplicate on a regular box is a false positive
    det2 = _det([BOX_A, BOX_A], [1, 1], [0.9, 0.8])
    assert confusion_matrix([gt], [det2], num_classes=2)[1, 0] == 1


def test_each_box_matched_once_highest_iou_first() -> None:
    gt = _gt([[0, 0, 100, 100], [60, 0, 160, 100]], [1, 2])
    # the detection overlaps both; it goes to the one with the higher IoU (the first)
    det = _det([[5, 0, 105, 100]], [2], [0.9])
    m = confusion_matrix([gt], [det], num_classes=2)
    assert m[2, 1] == 1 and m[0, 2] == 1 and m[:, 0].sum() == 0


def test_empty_images_and_bad_labels() -> None:
    empty_gt, empty_det = _gt([], []), _det([], [], [])
    m = confusion_matrix([empty_gt, _gt([BOX_A], [1])], [_det([BOX_A], [1], [1.0]), empty_det],
                         num_classes=1)
    np.testing.assert_array_equal(m, [[0, 1], [1, 0]])
    with pytest.raises(ValueError, match="labels"):
        confusion_matrix([_gt([BOX_A], [2])], [empty_det], num_classes=1)
    with pytest.raises(ValueError, match="images"):
        confusion_matrix([empty_gt], [], num_classes=1)


# ---------------------------------------------------------------- COCO error breakdown

ANIMALS_AND_CARS = [{"id": 1, "name": "dog", "supercategory": "animal"},
                    {"id": 2, "name": "cat", "supercategory": "animal"},
                    {"id": 5, "name": "car", "supercategory": "vehicle"}]
# xywh, 100x100 (large) boxes far apart
A, B, C, D = [10, 10, 100, 100], [150, 10, 100, 100], [10, 150, 100, 100], [150, 150, 100, 100]


def _coco(cats: list[dict], anns: list[tuple], num_images: int = 2) -> COCO:
    images = [{"id": i + 1, "width": 300, "height": 300, "file_name": f"{i}.jpg"}
              for i in range(num_images)]
    annotations = [{"id": j + 1, "image_id": a[0], "category_id": a[1], "bbox": list(a[2]),
                    "area": a[2][2] * a[2][3], "iscrowd": a[3] if len(a) > 3 else 0}
                   for j, a in enumerate(anns)]
    coco = COCO()
    coco.dataset = {"images": images, "annotations": annotations, "categories": cats}
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def _res(image_id: int, cat: int, box: list[float], score: float) -> dict:
    return {"image_id": image_id, "category_id": cat, "bbox": list(box), "score": score}


def _shift(box: list[float], dx: float) -> list[float]:
    return [box[0] + dx, box[1], box[2], box[3]]


def _aps(out: dict, name: str, area: str = "all") -> dict[str, float]:
    return out["per_class"][name][area]


def test_breakdown_perfect_detections() -> None:
    gt = _coco(ANIMALS_AND_CARS, [(1, 1, A), (1, 2, B), (2, 5, C)])
    res = [_res(1, 1, A, 0.9), _res(1, 2, B, 0.8), _res(2, 5, C, 0.7)]
    out = coco_error_breakdown(gt, res)
    assert json.loads(json.dumps(out)) == out
    for t in ERROR_TYPES:
        assert out["overall"]["all"][t] == pytest.approx(1.0, abs=EPS)
    assert out["per_class"]["dog"]["small"]["C75"] is None  # no small dog
    assert out["overall"]["small"]["C50"] is None
    assert out["sim_equals_oth"] is False
    assert len(out["recall"]) == 101 and len(out["curves"]["per_class"]["cat"]["C75"]) == 101


def test_breakdown_localisation_errors() -> None:
    gt = _coco(ANIMALS_AND_CARS, [(1, 1, A), (1, 2, B), (2, 5, C)])
    # dog: IoU 0.6 (75/125); cat: IoU 0.25 (40/160); car perfect
    res = [_res(1, 1, _shift(A, 25), 0.9), _res(1, 2, _shift(B, 60), 0.8), _res(2, 5, C, 0.7)]
    out = coco_error_breakdown(gt, res)
    dog, cat, car = _aps(out, "dog"), _aps(out, "cat"), _aps(out, "car")
    assert dog["C75"] == 0.0 and dog["C50"] == pytest.approx(1.0, abs=EPS)
    assert dog["Loc"] == pytest.approx(dog["C50"])
    assert cat["C75"] == 0.0 and cat["C50"] == 0.0 and cat["Loc"] == pytest.approx(1, abs=EPS)
    assert car["C75"] == pytest.approx(1.0, abs=EPS)
    assert out["overall"]["all"]["C75"] == pytest.approx(1 / 3, abs=EPS)
    assert out["overall"]["all"]["Loc"] == pytest.approx(1.0, abs=EPS)


def test_breakdown_similar_other_and_background_confusions() -> None:
    gt = _coco(ANIMALS_AND_CARS, [(1, 1, A), (1, 2, B), (1, 5, C)])
    # dog detections: on the dog (0.5), on the cat (same supercategory, 0.9), on the car
    # (other supercategory, 0.8), on nothing (0.4, ranked below the true positive)
    res = [_res(1, 1, A, 0.5), _res(1, 1, B, 0.9), _res(1, 1, C, 0.8), _res(1, 1, D, 0.4)]
    out = coco_error_breakdown(gt, res)
    dog = _aps(out, "dog")
    assert dog["C50"] == pytest.approx(1 / 3, abs=EPS)  # FP, FP, TP
    assert dog["Loc"] == pytest.approx(1 / 3, abs=EPS)
    assert dog["Sim"] == pytest.approx(1 / 2, abs=EPS)  # the cat box is ignored
    assert dog["Oth"] == pytest.approx(1.0, abs=EPS)  # the car box is ignored too
    assert dog["BG"] == 1.0 and dog["FN"] == 1.0
    cat = _aps(out, "cat")  # no detection at all
    assert [cat[t] for t in ERROR_TYPES] == [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0]
    # the curves stack as the MATLAB plot draws them
    curves = out["curves"]["per_class"]["dog"]
    for lo, hi in zip(ERROR_TYPES, ERROR_TYPES[1:], strict=False):
        assert np.all(np.asarray(curves[lo]) <= np.asarray(curves[hi]) + EPS)


def test_breakdown_background_and_missed() -> None:
    gt = _coco(ANIMALS_AND_CARS, [(1, 1, A), (1, 1, C)])
    # dog: a confident detection on nothing, the first dog found, the second one missed
    res = [_res(1, 1, B, 0.9), _res(1, 1, A, 0.8)]
    dog = _aps(coco_error_breakdown(gt, res), "dog")
    half = 51 / 101  # recall thresholds 0, 0.01, ..., 0.5 are reached
    assert dog["C50"] == pytest.approx(0.5 * half, abs=EPS)
    assert dog["Oth"] == pytest.approx(0.5 * half, abs=EPS)
    assert dog["BG"] == pytest.approx(half)
    assert dog["FN"] == 1.0


def test_ignoring_is_plain_iou_not_crowd_overlap() -> None:
    # a small dog detection inside a large cat box: IoU 0.0225 < 0.1, so it stays a false
    # positive even when cat boxes are ignored (crowd-style ignoring would hide it)
    gt = _coco(ANIMALS_AND_CARS, [(1, 1, [0, 0, 50, 50]), (1, 2, [100, 100, 200, 200])])
    res = [_res(1, 1, [0, 0, 50, 50], 0.5), _res(1, 1, [150, 150, 30, 30], 0.9)]
    dog = _aps(coco_error_breakdown(gt, res), "dog")
    assert dog["Oth"] == pytest.approx(0.5, abs=EPS)
    assert dog["BG"] == 1.0


def test_overall_c75_c50_equal_cocoeval_and_results_untouched() -> None:
    rng = np.random.default_rng(0)
    anns, res = [], []
    for img in range(1, 6):
        for j in range(4):
            x, y = 60 * j + 5, 40 * img
            box = [x, y, 40 + 10 * j, 30 + 5 * img]
            cat = [1, 2, 5][(img + j) % 3]
            anns.append((img, cat, box))
            jitter = _shift(box, float(rng.uniform(-12, 12)))
            res.append(_res(img, [1, 2, 5][(img + 2 * j) % 3], jitter, float(rng.random())))
            res.append(_res(img, cat, jitter, float(rng.random())))
    gt = _coco(ANIMALS_AND_CARS, anns, num_images=5)
    before = copy.deepcopy(res)
    out = coco_error_breakdown(gt, res)
    assert res == before
    with contextlib.redirect_stdout(io.StringIO()):
        ev = COCOeval(gt, gt.loadRes(copy.deepcopy(res)), "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    assert out["overall"]["all"]["C50"] == pytest.approx(ev.stats[1])
    assert out["overall"]["all"]["C75"] == pytest.approx(ev.stats[2])
    for area, i in (("small", 3), ("medium", 4)):
        if ev.stats[i] >= 0:  # APs / APm average all IoUs; C50 <= their bound only
            assert out["overall"][area]["C75"] <= out["overall"][area]["C50"] + EPS


def test_without_supercategories_sim_equals_oth() -> None:
    cats = [{"id": 1, "name": "dog"}, {"id": 2, "name": "cat"}, {"id": 5, "name": "car"}]
    gt = _coco(cats, [(1, 1, A), (1, 2, B), (1, 5, C)])
    res = [_res(1, 1, A, 0.5), _res(1, 1, B, 0.9), _res(1, 1, C, 0.8)]
    out = coco_error_breakdown(gt, res, class_names={1: "Dog", 2: "Cat", 5: "Car"})
    assert out["sim_equals_oth"] is True
    dog = _aps(out, "Dog")
    assert dog["Sim"] == dog["Oth"] == pytest.approx(1.0, abs=EPS)


def test_single_class_and_empty_results() -> None:
    gt = _coco([{"id": 3, "name": "thing", "supercategory": "x"}], [(1, 3, A), (2, 3, C)])
    res = [_res(1, 3, _shift(A, 60), 0.9), _res(2, 3, C, 0.8), _res(2, 3, D, 0.95)]
    thing = _aps(coco_error_breakdown(gt, res), "thing")
    assert thing["Sim"] == thing["Oth"] == pytest.approx(thing["Loc"])
    assert thing["C50"] < thing["Loc"] < thing["BG"] == 1.0
    empty = coco_error_breakdown(gt, [])
    assert [empty["overall"]["all"][t] for t in ERROR_TYPES] == [0, 0, 0, 0, 0, 0, 1]
    only_second = coco_error_breakdown(gt, res, image_ids=[2])
    assert only_second["num_images"] == 1
    assert _aps(only_second, "thing")["C50"] == pytest.approx(0.5, abs=EPS)
    with pytest.raises(ValueError, match="ground-truth images"):
        coco_error_breakdown(gt, [_res(99, 3, A, 0.5)])


# ---------------------------------------------------------------- PR curves


def test_precision_recall_curves_match_coco_evaluator() -> None:
    gt = _coco(ANIMALS_AND_CARS, [(1, 1, A), (1, 2, B), (2, 1, C), (2, 5, D)])
    evaluator = CocoEvaluator(gt, {1: 1, 2: 2, 3: 5}, ["__background__", "dog", "cat", "car"])
    xyxy = lambda b: [b[0], b[1], b[0] + b[2], b[1] + b[3]]  # noqa: E731
    evaluator.process(
        [{"image_id": 1}, {"image_id": 2}],
        [_det([xyxy(A), xyxy(B)], [1, 1], [0.9, 0.7]), _det([xyxy(_shift(C, 30))], [1], [0.8])],
    )
    evaluator.evaluate()
    with contextlib.redirect_stdout(io.StringIO()):
        ev = COCOeval(gt, gt.loadRes(copy.deepcopy(evaluator.results)), "bbox")
        ev.evaluate()
        ev.accumulate()
    curves = precision_recall_curves(ev)
    assert set(curves) == set(evaluator.pr_curves) == {"dog", "cat", "car"}
    for name, (recall, precision) in curves.items():
        np.testing.assert_allclose(recall, evaluator.pr_curves[name][0])
        np.testing.assert_allclose(precision, evaluator.pr_curves[name][1])
    recall, precision = curves["dog"]
    assert recall.shape == precision.shape == (101,)
    np.testing.assert_allclose(precision, 1.0, atol=EPS)  # both dogs ranked above the FP
    renamed = precision_recall_curves(ev, {1: "d", 2: "c", 5: "v"}, iou_thresh=0.75)
    assert set(renamed) == {"d", "c", "v"}
    # at IoU 0.75 the shifted dog (IoU 0.54) is missed: recall stops at 0.5
    assert renamed["d"][1][50] == pytest.approx(1.0, abs=EPS) and renamed["d"][1][51] == 0.0
    with pytest.raises(ValueError, match="IoU"):
        precision_recall_curves(ev, iou_thresh=0.33)
