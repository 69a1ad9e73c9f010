"""Every plot writes a readable PNG of a plausible size, atomically, and leaks no pyplot
figure (the functions never touch pyplot)."""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import cv2
import matplotlib
import numpy as np
import pytest
import torch
from matplotlib.figure import Figure
from pycocotools.coco import COCO

from rfcn.data.statistics import dataset_statistics
from rfcn.evaluation.error_analysis import coco_error_breakdown
from rfcn.visualization.plots import (
    plot_confusion_matrix,
    plot_dataset_histograms,
    plot_error_breakdown,
    plot_pr_curves,
    plot_training_curves,
)


@pytest.fixture(autouse=True)
def _no_pyplot_figures():
    import matplotlib.pyplot as plt

    backend = matplotlib.get_backend()
    rc = dict(matplotlib.rcParams)
    assert plt.get_fignums() == []
    yield
    assert plt.get_fignums() == []
    assert matplotlib.get_backend() == backend
    assert dict(matplotlib.rcParams) == rc


def _check_png(path: Path, min_side: int = 200) -> np.ndarray:
    assert path.is_file()
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    assert image is not None
    h, w = image.shape[:2]
    assert min_side <= h <= 4000 and min_side <= w <= 4000
    assert image.std() > 1.0  # something was drawn
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".tmp-")]
    return image


def test_confusion_matrix_png(tmp_path: Path) -> None:
    rng = np.random.default_rng()
    for c in (1, 5, 40):
        m = rng.integers(0, 20, (c + 1, c + 1))
        plot_confusion_matrix(m, [f"class{i}" for i in range(c)], tmp_path / f"cm{c}.png")
        _check_png(tmp_path / f"cm{c}.png")
    plot_confusion_matrix(np.zeros((3, 3), int), ["bg", "a", "b"], tmp_path / "zero.png",
                          normalize=False)
    _check_png(tmp_path / "zero.png")


def test_pr_curves_png(tmp_path: Path) -> None:
    rng = np.random.default_rng()
    recall = np.linspace(0, 1, 101)
    curves = {f"c{i}": (recall, np.sort(rng.random(101))[::-1]) for i in range(3)}
    voc_style = {"v": (np.array([0.2, 0.4, 0.4, 0.9]), np.array([1.0, 1.0, 0.66, 0.6]))}
    plot_pr_curves({**curves, **voc_style}, tmp_path / "pr.png")
    _check_png(tmp_path / "pr.png")
    many = {f"c{i}": (recall, rng.random(101)) for i in range(30)}
    plot_pr_curves(many, tmp_path / "sub" / "many.png")  # folder created
    _check_png(tmp_path / "sub" / "many.png")
    plot_pr_curves({}, tmp_path / "none.png")
    _check_png(tmp_path / "none.png")


class _Annotations:
    class_names = ["__background__", "a", "b"]

    def __init__(self, n: int, rng: np.random.Generator) -> None:
        self.anns = []
        for _ in range(n):
            m = int(rng.integers(0, 6))
            xy = rng.uniform(0, 100, (m, 2))
            boxes = np.hstack([xy, xy + rng.uniform(1, 100, (m, 2))])
            self.anns.append({"boxes": torch.tensor(boxes, dtype=torch.float32),
                              "labels": torch.from_numpy(rng.integers(1, 3, m)),
                              "orig_size": (200, 300)})

    def __len__(self) -> int:
        return len(self.anns)

    def get_annotation(self, i: int) -> dict:
        return self.anns[i]


def test_dataset_histograms_png(tmp_path: Path) -> None:
    stats = dataset_statistics(_Annotations(30, np.random.default_rng()))
    plot_dataset_histograms(stats, tmp_path / "hist.png")
    _check_png(tmp_path / "hist.png")
    empty = dataset_statistics(_Annotations(0, np.random.default_rng()))
    plot_dataset_histograms(empty, tmp_path / "empty.png")
    _check_png(tmp_path / "empty.png")


def test_training_curves_png(tmp_path: Path) -> None:
    rng = np.random.default_rng()
    history = {
        "train/loss": [(i, float(v)) for i, v in enumerate(rng.random(50) + 1)],
        "train/loss_classifier": [(i, float(v)) for i, v in enumerate(rng.random(50))],
        "train/lr": [(i, 0.01 * min(1, i / 10)) for i in range(50)],
        "eval/AP": [(25, 0.1), (50, 0.2)],
        "eval/AP50": [(25, 0.3), (50, 0.4)],
        "time/data": [(i, 0.1) for i in range(50)],  # fits no panel: left out
    }
    path = tmp_path / "curves.png"
    plot_training_curves(history, path)
    _check_png(path)
    before = path.stat().st_mtime_ns
    plot_training_curves({"train/loss": [(0, 1.0)], "eval/AP": []}, path)  # overwrites
    _check_png(path)
    assert path.stat().st_mtime_ns >= before
    plot_training_curves({}, tmp_path / "empty.png")
    _check_png(tmp_path / "empty.png")


def test_error_breakdown_png(tmp_path: Path) -> None:
    coco = COCO()
    coco.dataset = {
        "images": [{"id": 1, "width": 300, "height": 300, "file_name": "a.jpg"}],
        "categories": [{"id": 1, "name": "dog", "supercategory": "animal"},
                       {"id": 2, "name": "cat", "supercategory": "animal"}],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [10, 10, 90, 90],
                         "area": 8100, "iscrowd": 0},
                        {"id": 2, "image_id": 1, "category_id": 2,
                         "bbox": [150, 150, 90, 90], "area": 8100, "iscrowd": 0}]}
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    results = [{"image_id": 1, "category_id": 1, "bbox": [20, 10, 90, 90], "score": 0.9},
               {"image_id": 1, "category_id": 1, "bbox": [150, 150, 90, 90], "score": 0.8}]
    breakdown = coco_error_breakdown(coco, results)
    plot_error_breakdown(breakdown, tmp_path / "overall.png")
    _check_png(tmp_path / "overall.png")
    plot_error_breakdown(breakdown, tmp_path / "dog.png", class_name="dog")
    _check_png(tmp_path / "dog.png")
    plot_error_breakdown(breakdown, tmp_path / "small.png", area="small")  # no ground truth
    _check_png(tmp_path / "small.png")


def test_failed_write_keeps_the_old_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                        ) -> None:
    target = tmp_path / "cm.png"
    plot_confusion_matrix(np.eye(3, dtype=int), ["a", "b"], target)
    old = target.read_bytes()

    def broken_savefig(self, f, **kwargs):
        f.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(Figure, "savefig", broken_savefig)
    with pytest.raises(OSError, match="disk full"):
        plot_confusion_matrix(np.eye(3, dtype=int) * 2, ["a", "b"], target)
    assert target.read_bytes() == old
    assert [p.name for p in tmp_path.iterdir()] == ["cm.png"]
