"""A tiny, fast training setup shared by the engine and tools tests."""

from __future__ import annotations

from pathlib import Path

import hydra
import pytest

import rfcn.config  # noqa: F401  (registers the schemas)

CONFIG_DIR = str(Path(__file__).resolve().parents[2] / "configs")

# A small model and a few tiny images keep one iteration well under a second on 2 cores.
TINY_MODEL = [
    "model.train_min_sizes=null",
    "model.aspect_ratios=[0.5,1.0,2.0]",
    "model.min_size=96",
    "model.max_size=96",
    "model.k=3",
    "model.head_dim=32",
    "model.rpn_dim=32",
    "model.anchor_sizes=[32,64]",
    "model.rpn_pre_nms_top_n_train=100",
    "model.rpn_post_nms_top_n_train=32",
    "model.rpn_pre_nms_top_n_test=100",
    "model.rpn_post_nms_top_n_test=32",
    "model.box_batch_size_per_image=16",
    "model.rpn_batch_size_per_image=64",
]


def tiny_overrides(output_dir: Path, cache: Path, *extra: str) -> list[str]:
    return [
        f"output_dir={output_dir}",
        f"dataset.root={cache}",
        "dataset.num_train=6",
        "dataset.num_val=3",
        "dataset.image_size=192",
        *TINY_MODEL,
        "solver.ims_per_batch=2",
        "solver.warmup_iters=2",
        "train.max_iter=3",
        "train.checkpoint_period=2",
        "train.log_period=1",
        "train.num_workers=0",
        "train.num_threads=1",  # bit-exact comparisons: the default follows the idle cores
        "train.num_vis_images=1",
        "train.progress=false",
        *extra,
    ]


def compose_cfg(name: str, overrides: list[str]):
    with hydra.initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return hydra.compose(name, overrides=overrides)


@pytest.fixture(scope="session")
def tiny_cfg():
    """`tiny_cfg(output_dir, cache, *overrides, drop_dataset=False)` → a composed train
    config (`drop_dataset` leaves out the synthetic dataset.* overrides)."""

    def make(output_dir: Path, cache: Path, *extra: str, drop_dataset: bool = False):
        overrides = tiny_overrides(output_dir, cache)
        if drop_dataset:
            overrides = [o for o in overrides if not o.startswith("dataset.")]
        return compose_cfg("train", overrides + list(extra))

    return make


@pytest.fixture(scope="session")
def compose():
    """`compose(config_name, overrides)` with Hydra's compose API."""
    return compose_cfg


@pytest.fixture(scope="session")
def synthetic_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("synthetic-cache")


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory: pytest.TempPathFactory, synthetic_cache: Path) -> Path:
    """One 3-iteration training run (checkpoint at 2 and 3), shared read-only by tests."""
    from rfcn.entrypoints.train import train

    out = tmp_path_factory.mktemp("trained")
    train(compose_cfg("train", tiny_overrides(out, synthetic_cache)))
    return out
