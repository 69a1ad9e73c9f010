"""Issue 15 through the command lines: tools/browse.py (statistics, histograms, ground truth
drawn after the training transforms), tools/eval.py's error analysis files, and
tools/benchmark.py (parameters, FLOPs, images/s)."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import pytest

from tests.tools.conftest import SYNTH, TINY_MODEL
from tests.tools.conftest import run_tool as _run


def test_browse_draws_and_reports(tmp_path: Path) -> None:
    out = tmp_path / "browse"
    proc = _run("browse.py", f"dataset.root={tmp_path / 'cache'}", *SYNTH, "split=train",
                f"output={out}", "n=4", "transforms=true", "model.min_size=64",
                "model.max_size=64", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "images" in proc.stdout and "circle" in proc.stdout
    stats = json.loads((out / "statistics.json").read_text())
    assert stats["num_images"] == 6
    drawn = sorted((out / "images").glob("*.jpg"))
    assert len(drawn) == 4
    image = cv2.imread(str(drawn[0]))
    assert image is not None and max(image.shape[:2]) == 64  # after the training resize
    assert cv2.imread(str(out / "histograms.png")) is not None
    bad = _run("browse.py", f"output={tmp_path / 'x'}", "split=test", cwd=tmp_path)
    assert bad.returncode != 0 and "split" in bad.stderr


@pytest.fixture(scope="module")
def tiny_checkpoint(tiny_run: Path) -> Path:
    return tiny_run / "checkpoints" / "last.pt"


def test_eval_writes_the_error_analysis(tmp_path: Path, tiny_checkpoint: Path) -> None:
    out = tmp_path / "eval"
    proc = _run("eval.py", f"checkpoint={tiny_checkpoint}", f"hydra.run.dir={out}",
                "num_workers=0", "confusion_score_thresh=0.0", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    matrix = json.loads((out / "confusion_matrix.json").read_text())
    assert matrix["class_names"][0] == "background" and len(matrix["matrix"]) == 5
    # every ground-truth box of the val split is somewhere in the matrix (found or missed)
    truth = sum(sum(row[c] for row in matrix["matrix"]) for c in range(1, 5))
    cache = tiny_checkpoint.parents[2] / "cache"
    val = json.loads(next(cache.glob("synthetic-*/annotations/val.json")).read_text())
    assert truth == len(val["annotations"])
    errors = json.loads((out / "coco_errors.json").read_text())
    assert {"C75", "C50", "Loc", "Sim", "Oth", "BG", "FN"} <= set(errors["overall"]["all"])
    for name in ("confusion_matrix.png", "pr_curves.png", "coco_errors.png"):
        assert cv2.imread(str(out / name)) is not None, name


def test_benchmark_prints_params_flops_and_speed(tmp_path: Path, tiny_checkpoint: Path) -> None:
    proc = _run("benchmark.py", *TINY_MODEL, "num_classes=5", "image_size=[96,128]", "runs=2",
                "warmup=1", "json=true", "device=cpu", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    stats = json.loads(proc.stdout.strip().splitlines()[-1])
    assert stats["parameters"]["total"] > 1e6 and stats["flops"]["total"] > 1e8
    assert set(stats["flops"]["by_module"]) >= {"trunk", "rpn", "head"}
    assert stats["images_per_second"] > 0 and "FLOPs" in proc.stdout
    from_ckpt = _run("benchmark.py", f"checkpoint={tiny_checkpoint}", "image_size=[96,128]",
                     "runs=1", "warmup=0", "device=cpu", cwd=tmp_path)
    assert from_ckpt.returncode == 0, from_ckpt.stderr[-3000:]
    assert "5 classes" in from_ckpt.stdout
