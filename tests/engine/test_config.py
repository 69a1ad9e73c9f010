"""Every option of every config group composes; misspelt or mistyped keys fail by name."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf

import rfcn.config as rc

CONFIG_DIR = str(Path(__file__).resolve().parents[2] / "configs")
GROUPS = {
    group: sorted(p.stem for p in (Path(CONFIG_DIR) / group).glob("*.yaml"))
    for group in ("model", "dataset", "solver", "experiment")
}


def _compose(name: str, overrides: list[str]) -> OmegaConf:
    # infer.yaml has a folder of its own (its `model=FILE` key is not the model group)
    folder = str(Path(CONFIG_DIR) / "standalone") if name == "infer" else CONFIG_DIR
    with initialize_config_dir(config_dir=folder, version_base="1.3"):
        return compose(name, overrides=overrides)


def test_groups_have_the_contract_options() -> None:
    assert {"rfcn_r18", "rfcn_r50", "rfcn_r101"} <= set(GROUPS["model"])
    assert {"synthetic", "coco", "voc", "coco_json"} <= set(GROUPS["dataset"])
    assert {"default", "voc_paper", "coco_paper"} <= set(GROUPS["solver"])
    assert {"rfcn_r101_voc0712", "rfcn_r101_coco"} <= set(GROUPS["experiment"])


@pytest.mark.parametrize("group,option", [(g, o) for g, options in GROUPS.items() for o in options])
def test_every_option_composes(group: str, option: str) -> None:
    cfg = _compose("train", [f"{group}={option}"])
    assert cfg.train.max_iter > 0
    if group == "model":
        assert cfg.model.name.startswith("rfcn_resnet")
        assert set(rc.model_kwargs(cfg.model)) <= set(rc.ModelConfig.__dataclass_fields__)
    if group == "dataset":
        assert cfg.dataset.name == option
        rc.validate_dataset_config(cfg.dataset)


def test_default_is_the_cpu_quickstart() -> None:
    cfg = _compose("train", [])
    assert cfg.model.name == "rfcn_resnet18"
    assert cfg.dataset.name == "synthetic"
    assert cfg.model.weights is None and cfg.model.weights_backbone is None  # no download
    assert OmegaConf.to_container(cfg, resolve=True)["dataset"]["root"].endswith("synthetic")


def test_paper_experiments() -> None:
    voc = _compose("train", ["experiment=rfcn_r101_voc0712"])
    assert (voc.model.name, voc.dataset.name, voc.solver.base_lr) == (
        "rfcn_resnet101",
        "voc",
        0.001,
    )
    assert voc.solver.steps == [20000] and voc.train.max_iter == 30000
    coco = _compose("train", ["experiment=rfcn_r101_coco"])
    assert (coco.model.name, coco.dataset.name) == ("rfcn_resnet101", "coco")
    assert coco.solver.steps == [110000] and coco.train.max_iter == 140000


def test_documented_overrides() -> None:
    cfg = _compose(
        "train",
        [
            "dataset=coco_json",
            "dataset.train.ann_file=a.json",
            "dataset.train.img_dir=imgs",
            "dataset.val.ann_file=b.json",
            "dataset.val.img_dir=vimgs",
            "train.max_iter=3",
            "train.eval_period=2",
            "train.checkpoint_period=1",
            "train.resume=true",
            "train.device=cpu",
            "train.seed=7",
            "model.weights=x.pt",
            "solver.base_lr=0.1",
            "solver.schedule=step",
            "solver.steps=[2]",
        ],
    )
    assert cfg.dataset.val.img_dir == "vimgs" and cfg.train.seed == 7 and cfg.solver.steps == [2]


@pytest.mark.parametrize(
    "override,key",
    [
        ("train.max_itr=3", "max_itr"),
        ("solver.lr=0.1", "lr"),
        ("model.min_szie=100", "min_szie"),
        ("dataset.nmu_train=5", "nmu_train"),
    ],
)
def test_misspelt_key_fails_naming_it(override: str, key: str) -> None:
    with pytest.raises(ConfigCompositionException) as info:
        _compose("train", [override])
    text = str(info.value) + str(info.value.__cause__)
    assert key in text


def test_mistyped_value_fails() -> None:
    with pytest.raises(ConfigCompositionException, match="max_iter"):
        _compose("train", ["train.max_iter=lots"])


def test_eval_and_infer_configs() -> None:
    cfg = _compose("eval", ["checkpoint=c.pt"])
    assert cfg.dataset is None
    cfg = _compose("eval", ["checkpoint=c.pt", "dataset=voc", "dataset.root=/v"])
    assert cfg.dataset.name == "voc"
    cfg = _compose("infer", ["checkpoint=c.pt", "input=a.jpg", "output=o"])
    assert cfg.score_thresh == 0.5
    with pytest.raises(ConfigCompositionException, match="treshold"):
        _compose("infer", ["checkpoint=c.pt", "input=a", "output=o", "treshold=1"])


def test_validate_dataset_config_rejects_unknown_keys() -> None:
    with pytest.raises(Exception, match="bogus"):
        rc.validate_dataset_config({"name": "synthetic", "bogus": 1})
    with pytest.raises(ValueError, match="unknown dataset"):
        rc.validate_dataset_config({"name": "kitti"})


@pytest.mark.parametrize(
    "override,key",
    [("solver.optimizer=adam", "optimizer"), ("solver.schedule=linear", "schedule"),
     ("train.amp=fp8", "amp"), ("model.norm=layernorm", "norm"), ("model.ps_op=max", "ps_op")],
)
def test_unknown_choice_fails_at_composition(override: str, key: str) -> None:
    with pytest.raises(ConfigCompositionException) as info:
        _compose("train", [override])
    text = str(info.value) + str(info.value.__cause__)
    assert key in text and "expected one of" in text, text


def test_pretrained_trunk_leaves_the_norm_to_the_builder() -> None:
    scratch = _compose("train", [])
    assert scratch.model.norm == "bn"  # the CPU quickstart trains BatchNorm from scratch
    pretrained = _compose("train", ["model.weights_backbone=r18.pth"])
    assert pretrained.model.norm is None  # -> frozen BatchNorm, stem + res2 frozen
    assert _compose("train", ["model.weights_backbone=r18.pth", "model.norm=gn"]).model.norm == "gn"
