"""Data-aware sizing (issue 12): input size, images per step and anchors chosen from the
training boxes within the compute budget; explicit values win; the choice is stored."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from rfcn.data.sizing import SizingBudget, anchor_coverage, choose_anchors, choose_size

CONFIGS = str(Path(__file__).resolve().parents[2] / "configs")


def compose_train(overrides: list[str]):
    import hydra

    import rfcn.config  # noqa: F401  (registers the schemas)

    with hydra.initialize_config_dir(config_dir=CONFIGS, version_base="1.3"):
        return hydra.compose("train", overrides=overrides)


def _boxes(rng: np.random.Generator, n: int, median: float) -> np.ndarray:
    return np.exp(rng.normal(np.log(median), 0.35, size=n))


def test_square_shapes_keep_the_quickstart_size() -> None:
    """The synthetic set's statistics (256 px images, p5 box side ~32 px) give the tuned
    quickstart: 160 px, 4 images per step."""
    rng = np.random.default_rng(0)
    sides = np.clip(_boxes(rng, 5000, 56), 20, 120)
    choice = choose_size(np.full((2000, 2), 256), sides, 4)
    assert (choice.min_size, choice.ims_per_batch) == (160, 4)


def test_by_default_images_per_step_are_never_traded_below_4() -> None:
    """Issue 23: 2 images per step (BatchNorm statistics of 2 images) trained clearly worse on
    generated sets the rule was not tuned on; the default floor is 4."""
    rng = np.random.default_rng(1)
    sides = np.concatenate([_boxes(rng, 300, 40), _boxes(rng, 3000, 100)])
    choice = choose_size(np.tile([480, 640], (300, 1)), sides, 4, SizingBudget())
    assert choice.ims_per_batch == 4
    size = choice.train_size or choice.min_size  # zoomed: trains on crops of this size
    pixels = size * size * 640 / 480
    assert choice.ims_per_batch * pixels <= SizingBudget().step_pixels


def test_small_objects_in_large_photos_get_pixels_within_the_budget() -> None:
    rng = np.random.default_rng(1)
    sides = np.concatenate([_boxes(rng, 300, 40), _boxes(rng, 3000, 100)])
    # the trading itself, below the default floor (and without the zoom)
    budget = SizingBudget(min_ims_per_batch=2, max_zoom=1.0)
    choice = choose_size(np.tile([480, 640], (300, 1)), sides, 4, budget)
    assert choice.small_object_px >= budget.target_object_px * 0.9
    pixels = choice.min_size * choice.min_size * 640 / 480
    assert choice.ims_per_batch * pixels <= budget.step_pixels
    assert choice.ims_per_batch >= budget.min_ims_per_batch
    assert choice.ims_per_batch < 4  # 300 photos: pixels bought with images per step ...
    assert choose_size(np.tile([480, 640], (300, 1)), sides, 4, budget,
                       train_steps=1600).ims_per_batch == choice.ims_per_batch
    many = choose_size(np.tile([480, 640], (3000, 1)), np.tile(sides, 10), 4, budget,
                       train_steps=1600)  # ... but not when 3000 images need 4 per step
    assert many.ims_per_batch == 4 and many.min_size < choice.min_size  # to be seen 3 times
    assert many.ims_per_batch * many.min_size ** 2 * 640 / 480 <= budget.step_pixels
    big = _boxes(rng, 3000, 200)  # large objects: no images traded at all
    assert choose_size(np.tile([480, 640], (300, 1)), big, 4, budget).ims_per_batch == 4
    tight = choose_size(np.tile([480, 640], (300, 1)), sides, 4,
                        SizingBudget(step_pixels=60_000, max_zoom=1.0))
    assert tight.min_size < choice.min_size  # the budget caps the scale
    tiny = np.tile([60, 80], (10, 1))  # tiny objects in tiny images: upscaled at most 2x ...
    assert choose_size(tiny, np.full(10, 4.0), 4, SizingBudget(min_short=64)).scale <= 2.0
    assert choose_size(tiny, np.full(10, 4.0), 4).min_size == 128  # ... unless below min_short


def test_small_objects_under_the_budget_are_zoomed_within_max_zoom() -> None:
    """BCCD-like photos (640x480, small objects ~43 px): the budget trains at 160 px on
    crops whose side fractions run from (160/224)^2 ~ 0.5 to 1, which show the objects as
    at 224 px (1.4x: max_zoom; the anchors are fitted there); the model tests at 1.3x
    that (zoom_test_factor: 291 -> 288 px); the pixels per step stay the budget's."""
    rng = np.random.default_rng(2)
    sides = np.concatenate([_boxes(rng, 300, 45), _boxes(rng, 3000, 100)])
    hw = np.tile([480, 640], (300, 1))
    choice = choose_size(hw, sides, 4, train_steps=1600)
    assert (choice.train_size, choice.anchor_size, choice.crop_min_scale) == (160, 224, 0.5)
    assert choice.min_size == 288 and choice.zoom == pytest.approx(1.8)
    at_middle = choose_size(hw, sides, 4, SizingBudget(zoom_test_factor=1.0), train_steps=1600)
    assert (at_middle.min_size, at_middle.anchor_size, at_middle.crop_min_scale) == \
        (224, 224, 0.5)
    capped = choose_size(hw, sides, 4, SizingBudget(zoom_test_factor=9.0), train_steps=1600)
    assert capped.min_size == SizingBudget().max_short
    assert 4 * 160 * 160 * 640 / 480 <= SizingBudget().step_pixels
    off = choose_size(hw, sides, 4, SizingBudget(max_zoom=1.0), train_steps=1600)
    assert (off.min_size, off.train_size, off.crop_min_scale, off.anchor_size) == \
        (160, 0, None, 0)
    more = choose_size(hw, sides, 4, SizingBudget(max_zoom=3.0), train_steps=1600)
    assert more.anchor_size >= 224 and more.small_object_px == pytest.approx(20.0 * 1.3, abs=2)
    tiny = choose_size(hw, np.full(300, 8.0), 4, SizingBudget(max_zoom=3.0))
    assert tiny.scale <= SizingBudget().max_upscale  # the zoom never passes max_upscale
    big = choose_size(hw, _boxes(rng, 3000, 200), 4, train_steps=1600)
    assert big.train_size == 0 and big.crop_min_scale is None  # nothing needs a zoom
    # a run of few epochs (2000 images, 3.2 epochs) cannot afford to crop: no zoom
    few = choose_size(np.tile([480, 640], (2000, 1)), np.tile(sides, 6), 4, train_steps=1600)
    assert few.train_size == 0 and few.min_size <= 160
    assert choose_size(hw, sides, 4).train_size == 0  # epochs unknown: no zoom


class _Photos:
    """A dataset of `n` 640x480 photos holding small (~45 px) and larger boxes."""

    class_names = ["__background__", "a"]

    def __init__(self, n: int = 60) -> None:
        rng = np.random.default_rng(3)
        self.boxes = []
        for _ in range(n):
            sides = np.concatenate([_boxes(rng, 2, 45), _boxes(rng, 8, 100)])
            xy = rng.uniform(0, 400, (len(sides), 2))
            self.boxes.append(np.concatenate([xy, xy + sides[:, None]], axis=1))

    def __len__(self) -> int:
        return len(self.boxes)

    def get_annotation(self, i: int) -> dict:
        return {"orig_size": (480, 640), "boxes": self.boxes[i],
                "labels": np.ones(len(self.boxes[i]), dtype=np.int64)}


def test_zoom_sets_the_crop_keys_unless_the_user_chose_them() -> None:
    from rfcn import assembly

    cfg = compose_train([])
    chosen = assembly.apply_auto_sizing(cfg, _Photos())
    assert chosen["min_size"] > max(chosen["train_min_sizes"]) / 1.2  # tests above training
    assert (cfg.aug.crop_prob, cfg.aug.crop_min_scale) == (1.0, chosen["aug.crop_min_scale"])
    spec = assembly.config_spec(cfg.model, 2)
    assert spec.images.min_size == chosen["min_size"]
    assert spec.images.max_size >= chosen["min_size"]
    for keys in (["aug.crop_prob=0.3"], ["model.train_min_sizes=[160]"], ["sizing.max_zoom=1"]):
        user = compose_train(keys)
        picked = assembly.apply_auto_sizing(user, _Photos())
        assert "aug.crop_prob" not in picked, keys
        assert float(user.aug.crop_prob) == (0.3 if "aug.crop_prob=0.3" in keys else 0.0)
        sizes = picked.get("train_min_sizes") or [160]
        assert max(sizes) >= picked["min_size"], keys  # tested within the training sizes


def test_anchors_cover_the_boxes() -> None:
    rng = np.random.default_rng(2)
    w = _boxes(rng, 4000, 30)
    wh = np.stack([w, w * np.exp(rng.normal(0.3, 0.2, 4000))], axis=1)  # taller than wide
    sizes, ratios = choose_anchors(wh)
    assert anchor_coverage(wh, sizes, ratios) >= 0.95
    assert anchor_coverage(wh, (64, 128, 256, 512), (0.5, 1.0, 2.0)) < 0.5
    assert all(b == 2 * a for a, b in zip(sizes, sizes[1:], strict=False))  # octaves
    assert ratios == (0.5, 1.0, 2.0)
    # the synthetic shapes at 160 px (sides 17..70): the tuned quickstart anchors
    sides = np.clip(_boxes(rng, 4000, 35), 17, 70)
    assert choose_anchors(np.stack([sides, sides], 1)) == ((16, 32, 64, 128), (0.5, 1.0, 2.0))
    # strongly elongated boxes (text lines) widen the ratios
    flat = np.stack([w * 6, w], axis=1)
    assert min(choose_anchors(flat)[1]) <= 0.125


def test_auto_keys_resolve_in_the_config_and_explicit_values_win(tmp_path: Path) -> None:
    from rfcn import assembly

    cfg = compose_train([f"dataset.root={tmp_path}", "dataset.num_train=20",
                            "dataset.num_val=2", "dataset.image_size=256", "model.min_size=auto",
                            "model.max_size=auto", "model.anchor_sizes=auto",
                            "model.aspect_ratios=[0.5,1.0,2.0]", "model.train_min_sizes=auto"])
    train, _ = assembly.build_datasets(cfg.dataset)
    chosen = assembly.apply_auto_sizing(cfg, train)
    assert set(chosen) >= {"min_size", "max_size", "anchor_sizes", "train_min_sizes"}
    assert "aspect_ratios" not in chosen and list(cfg.model.aspect_ratios) == [0.5, 1.0, 2.0]
    spec = assembly.config_spec(cfg.model, 5)
    assert spec.images.min_size == chosen["min_size"]
    assert spec.images.training_sizes == tuple(chosen["train_min_sizes"])
    assert spec.rpn.anchor_sizes == tuple(chosen["anchor_sizes"])
    bad = compose_train(["model.min_size=big"])
    with pytest.raises(ValueError, match="min_size"):
        assembly.apply_auto_sizing(bad, train)
    left = compose_train(["model.min_size=auto"])
    with pytest.raises(ValueError, match="auto"):
        assembly.config_spec(left.model, 5)


def test_bad_explicit_values_name_the_key_and_benchmarks_run_without_data(tmp_path: Path) -> None:
    from rfcn import assembly

    cfg = compose_train([f"dataset.root={tmp_path}", "dataset.num_train=4", "dataset.num_val=2",
                         "dataset.image_size=128", "model.anchor_sizes=[16,-4]"])
    train, _ = assembly.build_datasets(cfg.dataset)
    with pytest.raises(ValueError, match="model.anchor_sizes"):
        assembly.apply_auto_sizing(cfg, train)
    nothing = compose_train(["model.min_size=200", "model.max_size=300",
                             "model.train_min_sizes=null", "model.anchor_sizes=[32,64]",
                             "model.aspect_ratios=[1.0]"])
    assert assembly.apply_auto_sizing(nothing, train) == {}  # no auto key: data not read
    bench = compose_train([])
    chosen = assembly.resolve_without_data(bench.model, (600, 900))
    assert chosen["min_size"] == 600 and chosen["max_size"] == 900
    spec = assembly.config_spec(bench.model, 5)
    assert (spec.images.min_size, spec.images.max_size) == (600, 900)
    assert spec.rpn.anchor_sizes == (64, 128, 256, 512)  # the builder's default
    assert spec.images.training_sizes == (600,)


def test_default_recipe_resolves_the_quickstart_on_the_synthetic_shapes(tmp_path: Path) -> None:
    """configs/model/rfcn_r18.yaml says `auto`: on the synthetic set that is the tuned
    quickstart size (~160 px, 4 images per step) and anchors (16..128)."""
    from rfcn import assembly

    cfg = compose_train([f"dataset.root={tmp_path}", "dataset.num_train=60", "dataset.num_val=2"])
    train, _ = assembly.build_datasets(cfg.dataset)
    chosen = assembly.apply_auto_sizing(cfg, train)
    # 160 px from the full 2000-image set (logged by the quickstart); a 60-image sample's
    # 5th percentile lands within a rounding step of it
    assert 152 <= chosen["min_size"] <= 168 and int(cfg.solver.ims_per_batch) == 4
    assert chosen["anchor_sizes"] == [16, 32, 64, 128]
    assert chosen["aspect_ratios"] == [0.5, 1.0, 2.0]
    assert min(chosen["train_min_sizes"]) < 160 < max(chosen["train_min_sizes"])
    assert assembly.config_spec(cfg.model, 5).images.max_size >= max(chosen["train_min_sizes"])


def test_anchor_coverage_in_chunks_equals_a_float64_loop() -> None:
    rng = np.random.default_rng(5)
    wh = np.exp(rng.uniform(np.log(2), np.log(600), (70_001, 2)))  # > 2 chunks
    sizes, ratios = (16, 32, 64, 128, 256), (0.5, 1.0, 2.0)
    anchors = [(s / np.sqrt(r), s * np.sqrt(r)) for s in sizes for r in ratios]
    covered = 0
    for w, h in wh[::97]:  # the reference on a subsample, then the same subsample chunked
        best = max(min(w, aw) * min(h, ah) / (w * h + aw * ah - min(w, aw) * min(h, ah))
                   for aw, ah in anchors)
        covered += best >= 0.5
    assert anchor_coverage(wh[::97], sizes, ratios) == covered / len(wh[::97])
    whole = anchor_coverage(wh, sizes, ratios)
    parts = [anchor_coverage(wh[i:i + 10_000], sizes, ratios) * len(wh[i:i + 10_000])
             for i in range(0, len(wh), 10_000)]
    assert whole == pytest.approx(sum(parts) / len(wh), abs=1e-12)
