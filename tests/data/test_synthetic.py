from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from rfcn.data import CocoDetection, ensure_synthetic_dataset
from rfcn.data.synthetic import CLASS_NAMES, MAX_OBJECT, MIN_OBJECT, render_image

PARAMS = {"num_train": 6, "num_val": 3, "image_size": 192, "seed": 4}


@pytest.fixture(scope="module")
def synth(tmp_path_factory) -> tuple[Path, dict[str, tuple[str, str]]]:
    root = tmp_path_factory.mktemp("synth")
    return root, ensure_synthetic_dataset(root, **PARAMS)


def test_layout_and_reading(synth) -> None:
    _, paths = synth
    for split, n in (("train", 6), ("val", 3)):
        img_dir, ann = paths[split]
        ds = CocoDetection(img_dir, ann)
        assert len(ds) == n and ds.num_bad_records == 0
        assert ds.class_names == ["__background__", *CLASS_NAMES]
        for i in range(n):
            img, t = ds[i]
            assert img.shape == (3, 192, 192)
            b = t["boxes"]
            assert 1 <= len(b) <= 6
            assert (b[:, :2] >= 0).all() and (b[:, 2:] <= 192).all()
            sides = (b[:, 2:] - b[:, :2]).max(1).values
            assert (sides >= MIN_OBJECT * 192 * 0.6).all()
            assert (sides <= MAX_OBJECT * 192 * 1.3).all()


def test_reused_and_deterministic(synth, tmp_path: Path) -> None:
    root, paths = synth
    ann = Path(paths["train"][1])
    mtime = ann.stat().st_mtime_ns
    assert ensure_synthetic_dataset(root, **PARAMS) == paths
    assert ann.stat().st_mtime_ns == mtime  # not regenerated
    other = ensure_synthetic_dataset(tmp_path, **PARAMS)
    assert Path(other["train"][1]).read_bytes() == ann.read_bytes()
    a = Path(paths["val"][0]) / "000001.jpg"
    assert (Path(other["val"][0]) / "000001.jpg").read_bytes() == a.read_bytes()


def test_other_parameters_other_dataset(synth) -> None:
    root, paths = synth
    new = ensure_synthetic_dataset(root, **{**PARAMS, "seed": 5, "num_train": 2, "num_val": 1})
    assert new["train"][1] != paths["train"][1]
    a = json.loads(Path(new["train"][1]).read_text())
    b = json.loads(Path(paths["train"][1]).read_text())
    assert len(a["images"]) == 2 and a["annotations"] != b["annotations"][: len(a["annotations"])]


def test_killed_generation_leaves_no_dataset(tmp_path: Path, monkeypatch) -> None:
    import rfcn.data.synthetic as synthetic

    def boom(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(synthetic, "_write_split", boom)
    with pytest.raises(KeyboardInterrupt):
        ensure_synthetic_dataset(tmp_path, **PARAMS)
    assert not [p for p in os.listdir(tmp_path) if not p.endswith(".lock")]
    monkeypatch.undo()
    # a stale temporary directory from a SIGKILLed run is removed on the next call
    key_dir = ensure_synthetic_dataset(tmp_path / "x", **PARAMS)["train"][0]
    final = Path(key_dir).parent
    stale = final.parent / f".{final.name}.tmpabc"
    stale.mkdir()
    for p in final.rglob("*"):
        if p.is_file():
            p.unlink()
    for p in sorted(final.rglob("*"), reverse=True):
        p.rmdir()
    final.rmdir()
    ensure_synthetic_dataset(tmp_path / "x", **PARAMS)
    assert not stale.exists() and final.is_dir()


def test_small_images_and_knobs(tmp_path: Path) -> None:
    paths = ensure_synthetic_dataset(tmp_path, num_train=3, num_val=2, image_size=48, seed=0)
    ds = CocoDetection(*paths["train"])
    assert ds.num_bad_records == 0 and ds[0][0].shape == (3, 48, 48)
    assert all(len(ds.get_annotation(i)["boxes"]) for i in range(3))
    one = ensure_synthetic_dataset(tmp_path, num_train=4, num_val=1, image_size=64, seed=0,
                                   max_objects=1, clutter=0.0)
    ds = CocoDetection(*one["train"])
    assert [len(ds.get_annotation(i)["boxes"]) for i in range(4)] == [1, 1, 1, 1]


def test_render_is_seeded_and_sane() -> None:
    a, sa = render_image(np.random.default_rng(0), 160, 200)
    b, sb = render_image(np.random.default_rng(0), 160, 200)
    assert a.shape == (160, 200, 3) and a.dtype == np.uint8
    assert np.array_equal(a, b) and sa == sb
    labels = {s[0] for k in range(30) for s in render_image(np.random.default_rng(k), 192, 192)[1]}
    assert labels == set(range(1, len(CLASS_NAMES) + 1))


def test_rejects_bad_parameters(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        ensure_synthetic_dataset(tmp_path, num_train=0, num_val=1, image_size=192, seed=0)
    with pytest.raises(ValueError):
        ensure_synthetic_dataset(tmp_path, num_train=1, num_val=1, image_size=16, seed=0)
    with pytest.raises(ValueError):
        ensure_synthetic_dataset(tmp_path, num_train=1, num_val=1, clutter=float("nan"))
