"""Issue 11 §1: the path a user takes, an ImageNet-initialised trunk (`weights_backbone`),
through the real tools: train, SIGKILL, resume (bit-identical to an uninterrupted run),
tools/eval.py and tools/infer.py on its checkpoint, fine-tuning to another class count (the
frozen stages of a fresh pretrained build stay frozen), and a 2-process DDP resume.

The weights files are stand-ins made here: torchvision ResNet-18 / ResNet-50 state dicts with
non-trivial BatchNorm statistics, passed as `model.weights_backbone=<path>` (the same code path
as the ImageNet enum names, without the download)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import torchvision
from torch import nn

from rfcn.checkpoint import load_checkpoint

from .run_tools import (
    SYNTH,
    TINY_MODEL,
    TINY_TRAIN,
    TOOLS,
    finish,
    kill_group,
    start_tool,
    synthetic_overrides,
    wait_for,
)

# The tiny model without its pinned trainable_layers: the pretrained default must decide.
PRETRAINED_MODEL = [o for o in TINY_MODEL if not o.startswith("model.trainable_layers")]
BUILDER = {"resnet18": "rfcn_r18", "resnet50": "rfcn_r50"}
RUN = ["train.max_iter=6", "train.checkpoint_period=3"]
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]


@pytest.fixture(scope="module")
def backbone_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """torchvision ResNet-18 and ResNet-50 state dicts, BN statistics randomised."""
    out = tmp_path_factory.mktemp("backbones")
    files = {}
    for i, arch in enumerate(BUILDER):
        torch.manual_seed(i)
        resnet = getattr(torchvision.models, arch)()
        with torch.no_grad():
            for m in resnet.modules():
                if isinstance(m, nn.BatchNorm2d):
                    m.running_mean.uniform_(-0.1, 0.1)
                    m.running_var.uniform_(0.5, 2.0)
        files[arch] = out / f"{arch}.pth"
        torch.save(resnet.state_dict(), files[arch])
    return files


def _overrides(run_dir: Path, cache: Path, arch: str, weights: Path, *extra: str) -> list[str]:
    return [f"hydra.run.dir={run_dir}", *synthetic_overrides(cache), f"model={BUILDER[arch]}",
            *PRETRAINED_MODEL, f"model.weights_backbone={weights}", *TINY_TRAIN, *extra]


def _fresh_trainable(arch: str, weights: Path, num_classes: int) -> list[str]:
    """Names of the parameters a fresh pretrained build trains."""
    from rfcn import models

    builder = getattr(models, f"rfcn_{arch}")
    model = builder(num_classes, weights_backbone=str(weights), head_dim=32, rpn_dim=32, k=3,
                    anchor_sizes=(32, 64))
    return [n for n, p in model.named_parameters() if p.requires_grad]


@pytest.fixture(scope="module")
def reference_runs(tmp_path_factory, synth_cache: Path, backbone_files) -> dict[str, Path]:
    """Uninterrupted pretrained runs of 6 iterations (checkpoints at 3 and 6), both archs
    side by side."""
    tmp = tmp_path_factory.mktemp("pretrained-ref")
    procs = {arch: start_tool([TOOLS / "train.py", *_overrides(tmp / arch, synth_cache, arch,
                                                               path, *RUN)],
                              tmp / f"{arch}.log")
             for arch, path in backbone_files.items()}
    for arch, proc in procs.items():
        rc, out = finish(proc, timeout=300)
        assert rc == 0, f"{arch}:\n{out[-4000:]}"
    return {arch: tmp / arch for arch in procs}


def _assert_same_weights_and_optimizer(want: dict, got: dict) -> None:
    assert want["model"].keys() == got["model"].keys()
    for k, v in want["model"].items():
        assert torch.equal(v, got["model"][k]), f"weights differ after resume: {k}"
    for k, v in want["optimizer"]["state"].items():
        for name, t in v.items():
            assert torch.equal(t, got["optimizer"]["state"][k][name]), (k, name)


@pytest.mark.parametrize(
    "arch", ["resnet18", pytest.param("resnet50", marks=pytest.mark.slow)])
def test_sigkill_then_resume_is_bit_exact(
    tmp_path: Path, synth_cache: Path, backbone_files, reference_runs, arch: str
) -> None:
    run_dir = tmp_path / "killed"
    last = run_dir / "checkpoints" / "last.pt"
    args = [TOOLS / "train.py", *_overrides(run_dir, synth_cache, arch, backbone_files[arch],
                                            *RUN)]
    victim = start_tool(args, tmp_path / "killed-1.log")
    try:
        wait_for(lambda: last.is_file() and load_checkpoint(last)["iteration"] >= 3,
                 timeout=240, what="the iteration-3 checkpoint", poll=0.1)
    finally:
        kill_group(victim)
        victim.wait()
        victim._log_file.close()  # type: ignore[attr-defined]
    rc, out = finish(start_tool([*args, "train.resume=true"], tmp_path / "killed-2.log"), 240)
    assert rc == 0, out[-4000:]
    assert "resumed from" in out, out[-3000:]
    got, want = load_checkpoint(last), load_checkpoint(reference_runs[arch] / "checkpoints"
                                                       / "last.pt")
    assert got["iteration"] == want["iteration"] == 6
    _assert_same_weights_and_optimizer(want, got)
    # what the checkpoint records decides the rebuilt model: frozen BN, stem + res2 frozen
    assert got["model_spec"]["trunk"] == {"arch": arch, "norm": "frozen_bn",
                                          "trainable_layers": 3, "deform_conv5": False}
    trainable = _fresh_trainable(arch, backbone_files[arch], 5)
    assert len(got["optimizer"]["state"]) == len(trainable)


def test_eval_and_infer_on_a_pretrained_checkpoint(tmp_path: Path, reference_runs) -> None:
    ckpt = reference_runs["resnet18"] / "checkpoints" / "last.pt"
    images = tmp_path / "photos"
    images.mkdir()
    rng = np.random.default_rng(0)
    for i, (h, w) in enumerate([(64, 64), (48, 80)]):
        cv2.imwrite(str(images / f"{i}.jpg"), rng.integers(0, 255, (h, w, 3), dtype=np.uint8))
    eval_proc = start_tool([TOOLS / "eval.py", f"checkpoint={ckpt}",
                            f"hydra.run.dir={tmp_path / 'eval'}", "device=cpu", "num_workers=0"],
                           tmp_path / "eval.log")
    infer_proc = start_tool([TOOLS / "infer.py", f"checkpoint={ckpt}", f"input={images}",
                             f"output={tmp_path / 'infer'}", "device=cpu", "score_thresh=0.0"],
                            tmp_path / "infer.log")
    rc, out = finish(eval_proc, 180)
    assert rc == 0, out[-4000:]
    rc, out2 = finish(infer_proc, 180)
    assert rc == 0, out2[-4000:]
    trained = json.loads((reference_runs["resnet18"] / "metrics.json").read_text())
    evaluated = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    for key in ("AP", "AP50", "per_class"):
        assert evaluated[key] == trained[key], key
    records = json.loads((tmp_path / "infer" / "detections.json").read_text())
    assert [Path(r["file"]).name for r in records] == ["0.jpg", "1.jpg"]
    assert (tmp_path / "infer" / "1.jpg").is_file()


def _three_classes(tmp_path: Path, cache: Path) -> list[str]:
    """The synthetic data as coco_json without 'cross': another class count."""
    root = next(p for p in cache.iterdir() if p.name.startswith("synthetic-"))
    out = ["dataset=coco_json"]
    for split in ("train", "val"):
        data = json.loads((root / "annotations" / f"{split}.json").read_text())
        cross = {c["id"] for c in data["categories"] if c["name"] == "cross"}
        data["categories"] = [c for c in data["categories"] if c["id"] not in cross]
        data["annotations"] = [a for a in data["annotations"] if a["category_id"] not in cross]
        ann = tmp_path / f"{split}.json"
        ann.write_text(json.dumps(data))
        out += [f"dataset.{split}.ann_file={ann}", f"dataset.{split}.img_dir={root / split}"]
    return out


def test_fine_tune_keeps_the_frozen_stages(
    tmp_path: Path, synth_cache: Path, backbone_files, reference_runs
) -> None:
    """Fine-tune the pretrained R-18 run on 3 classes with the default model config (which
    says norm=bn, no weights_backbone): the architecture comes from the checkpoint, so what
    trains is exactly what a fresh pretrained build trains; the frozen weights come out of
    two SGD steps bit-identical, the trainable ones do not."""
    from rfcn import assembly
    from rfcn.checkpoint import load_checkpoint as load

    source = reference_runs["resnet18"] / "checkpoints" / "last.pt"
    data = _three_classes(tmp_path, synth_cache)
    out_dir = tmp_path / "ft"
    args = [TOOLS / "train.py", f"hydra.run.dir={out_dir}", *data, *PRETRAINED_MODEL,
            *TINY_TRAIN, "train.max_iter=2", f"model.weights={source}"]
    rc, out = finish(start_tool(args, tmp_path / "ft.log"), 240)
    assert rc == 0, out[-4000:]
    assert "re-initialised" in out and "5 -> 4" in out, out[-3000:]
    tuned, src = load(out_dir / "checkpoints" / "last.pt"), load(source)
    assert tuned["model_spec"]["trunk"]["norm"] == "frozen_bn"
    assert tuned["model_spec"]["num_classes"] == 4
    trainable = set(_fresh_trainable("resnet18", backbone_files["resnet18"], 4))
    assert len(tuned["optimizer"]["state"]) == len(trainable)
    for name, value in tuned["model"].items():
        if name not in src["model"] or src["model"][name].shape != value.shape:
            continue  # the re-initialised class layers
        if name.startswith(("trunk.stem.", "trunk.layer1.")):
            assert torch.equal(value, src["model"][name]), f"frozen {name} changed"
    moved = [n for n in trainable if n in src["model"] and n.startswith("trunk.layer4")
             and not torch.equal(tuned["model"][n], src["model"][n])]
    assert moved, "no trainable trunk weight changed: the check is vacuous"
    # the in-process builder agrees, parameter by parameter
    from .run_tools import compose

    cfg = compose("train", [*data, *PRETRAINED_MODEL, f"model.weights={source}"])
    model = assembly.finetune_model(cfg.model, 4, src, "source")
    assert [n for n, p in model.named_parameters() if p.requires_grad] == \
        _fresh_trainable("resnet18", backbone_files["resnet18"], 4)


@pytest.mark.slow
def test_two_process_ddp_resume_is_bit_exact(
    tmp_path: Path, synth_cache: Path, backbone_files
) -> None:
    """torchrun 2 processes: 2 iterations then resume to 4 == 4 iterations straight (a step
    schedule without steps, so the learning rate does not depend on max_iter)."""
    weights = backbone_files["resnet18"]
    straight, split = tmp_path / "straight", tmp_path / "split"
    gn = ["solver.ims_per_batch=1", "train.checkpoint_period=2", "solver.schedule=step"]
    procs = [
        start_tool([TOOLS / "train.py", *_overrides(straight, synth_cache, "resnet18", weights,
                                                    "train.max_iter=4", *gn)],
                   tmp_path / "straight.log", launcher=TORCHRUN),
        start_tool([TOOLS / "train.py", *_overrides(split, synth_cache, "resnet18", weights,
                                                    "train.max_iter=2", *gn)],
                   tmp_path / "split-1.log", launcher=TORCHRUN),
    ]
    for proc in procs:
        rc, out = finish(proc, 300)
        assert rc == 0, out[-4000:]
    rc, out = finish(start_tool(
        [TOOLS / "train.py", *_overrides(split, synth_cache, "resnet18", weights,
                                         "train.max_iter=4", "train.resume=true", *gn)],
        tmp_path / "split-2.log", launcher=TORCHRUN), 300)
    assert rc == 0, out[-4000:]
    assert "resumed from" in out and "world size 2" in out, out[-3000:]
    a = load_checkpoint(straight / "checkpoints" / "last.pt")
    b = load_checkpoint(split / "checkpoints" / "last.pt")
    assert a["iteration"] == b["iteration"] == 4
    _assert_same_weights_and_optimizer(a, b)


def test_synthetic_parameters_match_run_tools() -> None:
    assert SYNTH["image_size"] == 64  # the tiny model's 64 px sizes assume it
