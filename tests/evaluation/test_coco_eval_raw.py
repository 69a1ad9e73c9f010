"""COCO evaluation at pycocotools' own numbers: the evaluator's AP equals raw `loadRes` +
COCOeval on fresh random detections (to 1e-9), without changing the results it is given,
and it lets go of the ground-truth index and the COCOeval state when released."""

from __future__ import annotations

import contextlib
import copy
import io

import numpy as np
import pytest
import torch
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from rfcn.evaluation.coco import COCO_METRIC_NAMES, CocoEvaluator, load_results


def _gt(rng: np.random.Generator, n_images: int = 30) -> COCO:
    images = [{"id": i + 1, "width": 320, "height": 240, "file_name": f"{i}.jpg"}
              for i in range(n_images)]
    anns = []
    for img in images:
        for _ in range(int(rng.integers(0, 6))):
            x, y = rng.uniform(0, 250), rng.uniform(0, 180)
            w, h = rng.uniform(4, 70), rng.uniform(4, 60)
            anns.append({"id": len(anns) + 1, "image_id": img["id"], "bbox": [x, y, w, h],
                         "area": w * h, "iscrowd": int(rng.random() < 0.05),
                         "category_id": int(rng.choice([3, 7, 11]))})
    coco = COCO()
    coco.dataset = {"images": images, "annotations": anns,
                    "categories": [{"id": c, "name": f"c{c}"} for c in (3, 7, 11)]}
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def _detections(rng: np.random.Generator, coco: COCO) -> list[dict]:
    out = []
    for img_id in coco.getImgIds():
        for ann in coco.loadAnns(coco.getAnnIds(imgIds=[img_id])):
            x, y, w, h = ann["bbox"]
            jitter = rng.normal(0, 4, 4)
            out.append({"image_id": img_id, "category_id": ann["category_id"],
                        "bbox": [x + jitter[0], y + jitter[1], max(1.0, w + jitter[2]),
                                 max(1.0, h + jitter[3])], "score": float(rng.random())})
        for _ in range(int(rng.integers(0, 4))):  # false positives
            out.append({"image_id": img_id, "category_id": int(rng.choice([3, 7, 11])),
                        "bbox": [*rng.uniform(0, 200, 2), *rng.uniform(5, 50, 2)],
                        "score": float(rng.random())})
    return out


def _raw_stats(coco: COCO, results: list[dict]) -> np.ndarray:
    with contextlib.redirect_stdout(io.StringIO()):
        ev = COCOeval(coco, coco.loadRes(copy.deepcopy(results)), iouType="bbox")
        ev.params.imgIds = sorted(coco.getImgIds())
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return ev.stats


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_evaluator_equals_raw_pycocotools_and_leaves_the_results_alone(seed: int) -> None:
    rng = np.random.default_rng(seed)
    coco = _gt(rng)
    results = _detections(rng, coco)
    before = copy.deepcopy(results)
    ev = CocoEvaluator(coco, {1: 3, 2: 7, 3: 11}, ["bg", "c3", "c7", "c11"],
                       sorted(coco.getImgIds()))
    metrics = ev._evaluate(sorted(coco.getImgIds()), results)
    raw = _raw_stats(coco, results)
    for i, name in enumerate(COCO_METRIC_NAMES):
        want = None if raw[i] < 0 else raw[i]
        if want is None:
            assert metrics[name] is None
        else:
            assert metrics[name] == pytest.approx(want, abs=1e-9), name
    assert results == before  # not deep-copied, and not changed either


def test_load_results_matches_loadres_fields() -> None:
    rng = np.random.default_rng(5)
    coco = _gt(rng, 5)
    results = _detections(rng, coco)
    with contextlib.redirect_stdout(io.StringIO()):
        raw = coco.loadRes(copy.deepcopy(results))
    ours = load_results(coco, results)
    assert sorted(ours.anns) == sorted(raw.anns)
    for k, a in raw.anns.items():
        b = ours.anns[k]
        for key in ("image_id", "category_id", "bbox", "score", "area", "id", "iscrowd"):
            assert b[key] == a[key], key
    with pytest.raises(ValueError, match="ground-truth images"):
        load_results(coco, [{**results[0], "image_id": 999}])


class _LazyDataset:
    """What CocoEvaluator.from_dataset needs: a lazily built index and its release."""

    def __init__(self, coco: COCO) -> None:
        self._source = coco
        self._coco: COCO | None = None
        self.built = self.released = 0
        self.label_to_cat_id = {1: 3, 2: 7, 3: 11}
        self.class_names = ["bg", "c3", "c7", "c11"]
        self.image_ids = sorted(coco.getImgIds())

    @property
    def coco(self) -> COCO:
        if self._coco is None:
            self.built += 1
            self._coco = self._source
        return self._coco

    def release_coco(self) -> None:
        self.released += 1
        self._coco = None


def test_the_index_is_built_when_evaluating_and_released_after() -> None:
    rng = np.random.default_rng(3)
    data = _LazyDataset(_gt(rng, 6))
    ev = CocoEvaluator.from_dataset(data)
    assert data.built == 0  # nothing at construction (the training start)
    ev.reset()
    for img_id in data.image_ids:
        ev.process([{"image_id": img_id}], [{"boxes": torch.tensor([[1.0, 2.0, 30.0, 40.0]]),
                                              "labels": torch.tensor([1]),
                                              "scores": torch.tensor([0.9])}])
    metrics = ev.evaluate()
    assert "AP" in metrics and data.built == 1
    ev.release()
    assert data.released == 1 and ev.coco_eval is None and ev.results
