"""train(cfg) end to end on a tiny generated dataset: outputs, resume, fine-tuning, guards."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from rfcn.checkpoint import CheckpointError, load_checkpoint
from rfcn.engine.trainer import TrainingDiverged
from rfcn.entrypoints.evaluate import evaluate
from rfcn.entrypoints.train import train


def test_train_writes_checkpoint_metrics_and_events(trained_run: Path) -> None:
    ckpt = load_checkpoint(trained_run / "checkpoints" / "last.pt")
    assert ckpt["iteration"] == 3
    assert ckpt["class_names"] == ["__background__", "circle", "rectangle", "triangle", "cross"]
    assert ckpt["label_to_cat_id"] == {1: 1, 2: 2, 3: 3, 4: 4}
    assert "max_iter: 3" in ckpt["config"]
    for key in ("model", "optimizer", "scheduler", "scaler", "rng"):
        assert key in ckpt
    metrics = json.loads((trained_run / "metrics.json").read_text())
    for key in ("AP", "AP50", "AP75", "APs", "APm", "APl", "per_class"):
        assert key in metrics
    assert 0.0 <= metrics["AP50"] <= 1.0
    assert set(metrics["per_class"]) == {"circle", "rectangle", "triangle", "cross"}
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(trained_run), size_guidance={"images": 0, "tensors": 0})
    events.Reload()
    tags = events.Tags()
    for tag in (
        "train/loss",
        "train/lr",
        "train/nonfinite_steps",
        "data/skipped_files",
        "eval/AP",
        "eval/AP50",
    ):
        assert tag in tags["scalars"], tag
    assert "predictions/0" in tags["images"]
    assert [p.name for p in (trained_run / "checkpoints").iterdir()] == ["last.pt"]


def test_resume_is_bit_exact(
    tmp_path: Path, synthetic_cache: Path, trained_run: Path, tiny_cfg
) -> None:
    # stop after 2 iterations, then resume to 3: same weights as the uninterrupted run
    out = tmp_path / "resumed"
    train(tiny_cfg(out, synthetic_cache, "train.max_iter=2"))
    assert load_checkpoint(out / "checkpoints" / "last.pt")["iteration"] == 2
    # what a kill during a checkpoint write leaves behind: removed on restart, others kept
    stale = out / "checkpoints" / ".last.pt.k1ll3d.tmp"
    stale.write_bytes(b"half a checkpoint")
    unrelated = out / "checkpoints" / "notes.tmp"
    unrelated.write_text("mine")
    train(tiny_cfg(out, synthetic_cache, "train.resume=true"))
    assert not stale.exists() and unrelated.exists()
    resumed = load_checkpoint(out / "checkpoints" / "last.pt")
    reference = load_checkpoint(trained_run / "checkpoints" / "last.pt")
    assert resumed["iteration"] == 3
    for k, v in reference["model"].items():
        assert torch.equal(v, resumed["model"][k]), k
    ref_metrics = json.loads((trained_run / "metrics.json").read_text())
    new_metrics = json.loads((out / "metrics.json").read_text())
    assert ref_metrics["AP"] == new_metrics["AP"]


def test_eval_equals_training_final_eval(tmp_path: Path, trained_run: Path, compose) -> None:
    out = tmp_path / "eval"
    cfg = compose(
        "eval",
        [
            f"checkpoint={trained_run / 'checkpoints' / 'last.pt'}",
            f"output_dir={out}",
            "num_workers=0",
        ],
    )
    metrics = evaluate(cfg)
    trained = json.loads((trained_run / "metrics.json").read_text())
    for key in ("AP", "AP50", "AP75", "APs", "APm", "APl", "per_class"):
        assert metrics[key] == trained[key], key
    assert json.loads((out / "metrics.json").read_text())["AP"] == trained["AP"]
    detections = json.loads((out / "detections.json").read_text())
    assert all(set(d) == {"image_id", "category_id", "bbox", "score"} for d in detections)
    assert {d["category_id"] for d in detections} <= {1, 2, 3, 4}


def _three_class_dataset(tmp_path: Path, synthetic_cache: Path) -> list[str]:
    """The tiny synthetic data rewritten as coco_json with 'cross' removed and ids renumbered
    (10, 20, 30): another class count and non-contiguous category ids."""
    root = next(p for p in synthetic_cache.iterdir() if p.name.startswith("synthetic-"))
    overrides = ["dataset=coco_json"]
    for split in ("train", "val"):
        data = json.loads((root / "annotations" / f"{split}.json").read_text())
        cross = {c["id"] for c in data["categories"] if c["name"] == "cross"}
        data["categories"] = [
            {**c, "id": c["id"] * 10} for c in data["categories"] if c["id"] not in cross
        ]
        data["annotations"] = [
            {**a, "category_id": a["category_id"] * 10}
            for a in data["annotations"]
            if a["category_id"] not in cross
        ]
        ann = tmp_path / f"{split}.json"
        ann.write_text(json.dumps(data))
        overrides += [f"dataset.{split}.ann_file={ann}", f"dataset.{split}.img_dir={root / split}"]
    return overrides


def test_fine_tune_with_another_class_count(
    tmp_path: Path, synthetic_cache: Path, trained_run: Path, tiny_cfg, caplog
) -> None:
    weights = trained_run / "checkpoints" / "last.pt"
    out = tmp_path / "finetune"
    cfg = tiny_cfg(
        out,
        synthetic_cache,
        *_three_class_dataset(tmp_path, synthetic_cache),
        "train.max_iter=1",
        f"model.weights={weights}",
        drop_dataset=True,
    )
    with caplog.at_level("INFO", logger="rfcn.models.weights"):
        metrics = train(cfg)
    assert "re-initialised" in caplog.text and "5 -> 4" in caplog.text
    ckpt = load_checkpoint(out / "checkpoints" / "last.pt")
    assert ckpt["class_names"] == ["__background__", "circle", "rectangle", "triangle"]
    assert ckpt["label_to_cat_id"] == {1: 10, 2: 20, 3: 30}
    assert set(metrics["per_class"]) == {"circle", "rectangle", "triangle"}
    source = load_checkpoint(weights)["model"]
    trunk_keys = [k for k in source if k.startswith("trunk.") and "weight" in k]
    # trunk weights come from the checkpoint (then one SGD step), not a fresh init
    k = trunk_keys[0]
    assert torch.allclose(ckpt["model"][k], source[k], atol=1e-2)


def test_hostile_weights_refused(tmp_path: Path, synthetic_cache: Path, tiny_cfg) -> None:
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    evil = tmp_path / "evil.pt"
    torch.save({"model": {}, "payload": Payload()}, evil)
    cfg = tiny_cfg(tmp_path / "out", synthetic_cache, f"model.weights={evil}")
    with pytest.raises(CheckpointError, match="refusing to load"):
        train(cfg)
    assert not marker.exists()


def test_exploding_lr_stops_and_keeps_good_checkpoint(
    tmp_path: Path, synthetic_cache: Path, trained_run: Path, tiny_cfg
) -> None:
    out = tmp_path / "explode"
    shutil.copytree(trained_run, out)
    good = load_checkpoint(out / "checkpoints" / "last.pt")
    cfg = tiny_cfg(
        out,
        synthetic_cache,
        "train.resume=true",
        "train.max_iter=40",
        "train.checkpoint_period=1",
        "train.max_nonfinite_steps=2",
        "solver.base_lr=1e6",
        "solver.warmup_iters=0",
    )
    with pytest.raises(TrainingDiverged) as info:
        train(cfg)
    message = str(info.value)
    assert str(out / "checkpoints" / "last.pt") in message
    kept = load_checkpoint(out / "checkpoints" / "last.pt")
    assert kept["iteration"] >= good["iteration"]
    for v in kept["model"].values():
        if v.is_floating_point():
            assert torch.isfinite(v).all()
