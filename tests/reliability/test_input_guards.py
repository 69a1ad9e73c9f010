"""Issue 7, bullet 5: images far larger than max_size, zero-size images and a dataset whose
every image is bad end with clear messages, not tracebacks from deep inside torch."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from rfcn import assembly
from rfcn import config as rc
from rfcn.checkpoint import load_checkpoint, save_checkpoint

from .run_tools import TINY_MODEL, TINY_TRAIN, TOOLS, compose, finish, start_tool

# (file name, height, width, kind): kind "ok" is a real JPEG with one box; "empty" a 0-byte
# file; "zero-size" a real file whose annotation says 0 x 0.
NORMAL = [("a.jpg", 64, 64, "ok"), ("b.jpg", 80, 60, "ok")]
BAD = [(f"bad{i}.jpg", 64, 64, "empty") for i in range(4)]
HUGE = [("huge.jpg", 3000, 4000, "ok"), ("strip.jpg", 24, 4000, "ok"), ("tall.jpg", 3000, 20, "ok")]


def write_coco(root: Path, images: list[tuple[str, int, int, str]]) -> tuple[Path, Path]:
    """A COCO-json split with 4 classes (the synthetic ones) under `root`."""
    img_dir = root / "images"
    img_dir.mkdir(parents=True)
    rng = np.random.default_rng(0)
    entries, anns = [], []
    for i, (name, h, w, kind) in enumerate(images, 1):
        path = img_dir / name
        if kind == "empty":
            path.write_bytes(b"")
        else:
            img = np.full((h, w, 3), rng.integers(40, 200, 3), np.uint8)
            x2, y2 = max(w * 3 // 4, w // 4 + 1), max(h * 3 // 4, h // 4 + 1)
            cv2.rectangle(img, (w // 4, h // 4), (x2, y2), (250, 30, 30), -1)
            assert cv2.imwrite(str(path), img)
        ann_h, ann_w = (0, 0) if kind == "zero-size" else (h, w)
        entries.append({"id": i, "file_name": name, "height": ann_h, "width": ann_w})
        bw, bh = max(w // 2, 1), max(h // 2, 1)
        anns.append({"id": i, "image_id": i, "category_id": 1 + i % 4, "iscrowd": 0,
                     "bbox": [w // 4, h // 4, bw, bh], "area": float(bw * bh)})
    cats = [{"id": k, "name": n} for k, n in enumerate(
        ("circle", "rectangle", "triangle", "cross"), 1)]
    ann_file = root / "ann.json"
    ann_file.write_text(json.dumps({"images": entries, "annotations": anns, "categories": cats}))
    return img_dir, ann_file


def coco_overrides(train: tuple[Path, Path], val: tuple[Path, Path]) -> list[str]:
    return [
        "dataset=coco_json",
        f"dataset.train.img_dir={train[0]}", f"dataset.train.ann_file={train[1]}",
        f"dataset.val.img_dir={val[0]}", f"dataset.val.ann_file={val[1]}",
    ]


def _train_cfg(out: Path, data: list[str], *extra: str):
    """A train config on a coco_json dataset (no synthetic dataset.* overrides)."""
    return compose("train", [f"output_dir={out}", *data, *TINY_MODEL, *TINY_TRAIN, *extra])


def test_images_far_larger_than_max_size_train_and_evaluate(tmp_path: Path) -> None:
    """12 MP, 4000x24 and 20x3000 images with max_size 64: resized, trained; the 12 MP one is
    evaluated too (the strips have their own test below)."""
    from rfcn.entrypoints.train import train

    train_split = write_coco(tmp_path / "train", NORMAL + HUGE)
    val_split = write_coco(tmp_path / "val", NORMAL + HUGE[:1])
    cfg = _train_cfg(tmp_path / "out", coco_overrides(train_split, val_split), "train.max_iter=3",
                     "solver.ims_per_batch=2", "train.checkpoint_period=3")
    metrics = train(cfg)
    assert metrics["num_images"] == 3
    state = load_checkpoint(tmp_path / "out" / "checkpoints" / "last.pt")
    assert state["iteration"] == 3
    assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())


def test_extreme_aspect_images_evaluate_and_infer(tmp_path: Path, tiny_checkpoint: Path) -> None:
    """Evaluation and inference take images unresized: a 4000x24 strip with max_size 64 must
    be detected on (a side scaled below 1 px is clamped to 1) or refused with a message naming
    the image, never `RuntimeError: Input and output sizes should be greater than 0`."""
    from rfcn.entrypoints.evaluate import evaluate
    from rfcn.entrypoints.infer import infer

    split = write_coco(tmp_path / "data", HUGE[1:])
    cfg = compose("eval", [f"checkpoint={tiny_checkpoint}", *coco_overrides(split, split)[:1],
                           f"dataset.val.img_dir={split[0]}", f"dataset.val.ann_file={split[1]}",
                           f"dataset.train.img_dir={split[0]}",
                           f"dataset.train.ann_file={split[1]}",
                           f"output_dir={tmp_path / 'eval'}", "device=cpu", "num_workers=0"])
    assert evaluate(cfg)["num_images"] == 2
    cfg = compose("infer", [f"checkpoint={tiny_checkpoint}", f"input={split[0]}",
                            f"output={tmp_path / 'infer'}", "device=cpu"])
    assert len(infer(cfg)) == 2


def test_zero_size_images_are_skipped_with_a_warning(tmp_path: Path, caplog) -> None:
    """A 0-byte file and an image recorded as 0 x 0 among good ones: training goes on, and a
    warning names each."""
    from rfcn.entrypoints.train import train

    split = write_coco(
        tmp_path / "data",
        NORMAL + [("empty.jpg", 64, 64, "empty"), ("zero.jpg", 64, 64, "zero-size")]
        + [("c.jpg", 64, 64, "ok")],
    )
    cfg = _train_cfg(tmp_path / "out", coco_overrides(split, split), "train.max_iter=4",
                     "solver.ims_per_batch=2", "train.checkpoint_period=4")
    with caplog.at_level(logging.WARNING):
        train(cfg)
    assert "empty.jpg" in caplog.text, caplog.text
    # the 0 x 0 record is dropped when the annotations are read, reported with the file
    assert "invalid width/height dropped" in caplog.text, caplog.text
    assert "ann.json" in caplog.text, caplog.text
    assert load_checkpoint(tmp_path / "out" / "checkpoints" / "last.pt")["iteration"] == 4


def _no_deep_traceback(out: str) -> None:
    assert "site-packages/torch" not in out, f"a traceback from inside torch:\n{out[-4000:]}"


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("ckpt")
    split = write_coco(out / "data", NORMAL)
    cfg = compose("train", [f"output_dir={out}", *coco_overrides(split, split), *TINY_MODEL])
    model = assembly.build_model(cfg.model, 5, load_backbone=False)
    path = out / "model.pt"
    save_checkpoint(
        {"model": model.state_dict(),
         "class_names": ["__background__", "circle", "rectangle", "triangle", "cross"],
         "label_to_cat_id": {1: 1, 2: 2, 3: 3, 4: 4}, "config": rc.to_yaml(cfg),
         "architecture": cfg.model.name, "iteration": 0},
        path,
    )
    return path


def test_all_bad_images_end_with_clear_messages(tmp_path: Path, tiny_checkpoint: Path) -> None:
    """Every image a 0-byte file: training (with a data worker) and inference each end with
    a message naming the problem, not a torch traceback (run side by side)."""
    split = write_coco(tmp_path / "data", BAD)
    data = coco_overrides(split, split)
    procs = {
        "train": start_tool(
            [TOOLS / "train.py", f"hydra.run.dir={tmp_path / 'train'}", *data, *TINY_MODEL,
             "train.device=cpu", "train.num_workers=1", "train.max_iter=2",
             "train.progress=false", "train.num_threads=1"],
            tmp_path / "train.log",
        ),
        "infer": start_tool(
            [TOOLS / "infer.py", f"checkpoint={tiny_checkpoint}", f"input={split[0]}",
             f"output={tmp_path / 'infer'}", "device=cpu",
             f"hydra.run.dir={tmp_path / 'infer-run'}"],
            tmp_path / "infer.log",
        ),
    }
    results = {name: finish(proc, timeout=150) for name, proc in procs.items()}
    rc_, out = results["train"]
    assert rc_ != 0, out[-4000:]
    assert "unreadable" in out and "empty file" in out, out[-4000:]
    assert "error: iteration 0: none of" in out and "Traceback" not in out, out[-4000:]
    _no_deep_traceback(out)
    assert not (tmp_path / "train" / "checkpoints" / "last.pt").exists()
    rc_, out = results["infer"]
    assert rc_ != 0, out[-4000:]
    assert "bad0.jpg" in out and "empty file" in out, out[-4000:]
    assert "no readable image" in out, out[-4000:]
    _no_deep_traceback(out)


def test_evaluating_only_bad_images_fails_clearly(tmp_path: Path, tiny_checkpoint: Path) -> None:
    """tools/eval.py on a dataset whose every image is unreadable: the per-file warnings are
    there, but the run must end with an error saying no image could be read, not report
    AP = 0.00 over 0 images as a result."""
    from rfcn.entrypoints.evaluate import evaluate

    split = write_coco(tmp_path / "data", BAD)
    cfg = compose("eval", [f"checkpoint={tiny_checkpoint}", *coco_overrides(split, split),
                           f"output_dir={tmp_path / 'eval'}", "device=cpu", "num_workers=0"])
    with pytest.raises((RuntimeError, ValueError)) as info:
        evaluate(cfg)
    message = str(info.value)
    assert "image" in message and ("read" in message or "unreadable" in message), message
    assert not (tmp_path / "eval" / "metrics.json").exists()
