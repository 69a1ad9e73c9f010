"""Issue 7, bullet 4: `torchrun --nproc_per_node=2 tools/train.py train.device=cpu` trains with
DDP over gloo. One step with 2 processes x batch B equals one single-process step with batch
2B; only rank 0 writes; evaluation gathers every rank's images; `--max-restarts` plus
`train.resume=true` recovers from a killed worker."""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path

import pytest
import torch

from rfcn.checkpoint import load_checkpoint

from .run_tools import (
    TINY_TRAIN,
    TOOLS,
    compose,
    finish,
    kill_group,
    start_tool,
    wait_for,
)

TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]

# Sampling made deterministic and per-image counts equal, so that the batch-2B loss is exactly
# the mean of the per-image losses (what DDP's gradient averaging computes):
# - RPN: fg == bg IoU threshold (no ignored anchors), a sample size above the anchor count and
#   positive fraction 1: every anchor of every image is sampled (96 per 64 px image);
# - proposals: NMS off (threshold 1.0) and more pre-NMS candidates than anchors, so every image
#   has exactly post_nms_top_n proposals; one object per image (+1 ground-truth RoI each);
# - head: no OHEM, a sample size above the RoI count and positive fraction 1: every RoI;
# - images all 64x64 (no padding differences), GroupNorm (no batch statistics).
EQUIVALENT_MODEL = [
    "model.norm=gn",  # BatchNorm's statistics would depend on the per-process batch (CPU)
    "model.min_size=64",
    "model.max_size=64",
    "model.k=3",
    "model.head_dim=32",
    "model.rpn_dim=32",
    "model.anchor_sizes=[32,64]",
    "model.rpn_pre_nms_top_n_train=1000",
    "model.rpn_post_nms_top_n_train=16",
    "model.rpn_pre_nms_top_n_test=50",
    "model.rpn_post_nms_top_n_test=16",
    "model.rpn_nms_thresh=1.0",
    "model.rpn_fg_iou_thresh=0.5",
    "model.rpn_bg_iou_thresh=0.5",
    "model.rpn_batch_size_per_image=4096",
    "model.rpn_positive_fraction=1.0",
    "model.ohem=false",
    "model.box_batch_size_per_image=4096",
    "model.box_positive_fraction=1.0",
    "model.box_score_thresh=0.0",
    "model.norm=gn",
]


@pytest.fixture(scope="module")
def one_object_data(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """coco_json overrides for 8 train / 4 val synthetic 64 px images with one object each."""
    from rfcn.data.synthetic import ensure_synthetic_dataset

    root = tmp_path_factory.mktemp("one-object")
    splits = ensure_synthetic_dataset(
        root, num_train=8, num_val=4, image_size=64, seed=1, max_objects=1
    )
    out = ["dataset=coco_json"]
    for split, (img_dir, ann_file) in splits.items():
        out += [f"dataset.{split}.img_dir={img_dir}", f"dataset.{split}.ann_file={ann_file}"]
    return out


def _overrides(run_dir: Path, data: list[str], *extra: str) -> list[str]:
    return [f"hydra.run.dir={run_dir}", *data, *EQUIVALENT_MODEL, *TINY_TRAIN,
            "solver.warmup_iters=0", "solver.optimizer=sgd", "solver.base_lr=0.02",
            *extra]


def _model(run_dir: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(run_dir / "checkpoints" / "last.pt")["model"]


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory: pytest.TempPathFactory, one_object_data: list[str]):
    """torchrun, 2 processes x B=1, one iteration: (run dir, console output)."""
    tmp = tmp_path_factory.mktemp("ddp-run")
    run_dir = tmp / "ddp"
    rc, out = finish(
        start_tool(
            [TOOLS / "train.py",
             *_overrides(run_dir, one_object_data, "train.max_iter=1",
                         "solver.ims_per_batch=1")],
            tmp / "ddp.log",
            launcher=TORCHRUN,
        ),
        timeout=240,
    )
    assert rc == 0, out[-4000:]
    return run_dir, out


def test_two_processes_batch_b_equal_one_process_batch_2b(
    tmp_path: Path, ddp_run, one_object_data: list[str]
) -> None:
    """One iteration each: torchrun 2 x B=1 (the `ddp_run` fixture), then side by side one
    process with B=2, one with lr 0 (the initial weights w0) and one with B=1 (rank 0's half
    of the batch alone). The updates w1 - w0 of the first two must agree to float tolerance;
    a missing gradient all-reduce would give the B=1 update, which differs from the two-image
    one by far more than the tolerance (checked, so the comparison is not vacuous)."""
    dirs = {name: tmp_path / name for name in ("single", "w0", "one-image")}
    extra = {
        "single": ["solver.ims_per_batch=2"],
        "w0": ["solver.ims_per_batch=2", "solver.base_lr=0.0"],
        "one-image": ["solver.ims_per_batch=1"],
    }
    procs = {
        name: start_tool(
            [TOOLS / "train.py",
             *_overrides(dirs[name], one_object_data, "train.max_iter=1", *extra[name])],
            tmp_path / f"{name}.log",
        )
        for name in dirs
    }
    for name, proc in procs.items():
        rc, out = finish(proc, timeout=240)
        assert rc == 0, f"{name}:\n{out[-4000:]}"
    dirs["ddp"] = ddp_run[0]
    w0, ddp, single, half = (_model(dirs[n]) for n in ("w0", "ddp", "single", "one-image"))
    num, den, control = 0.0, 0.0, 0.0
    for k, v0 in w0.items():
        if not v0.is_floating_point():
            continue
        d_ddp, d_single, d_half = ddp[k] - v0, single[k] - v0, half[k] - v0
        num += float((d_ddp - d_single).double().pow(2).sum())
        den += float(d_single.double().pow(2).sum())
        control += float((d_half - d_single).double().pow(2).sum())
        torch.testing.assert_close(d_ddp, d_single, rtol=1e-3, atol=1e-6, msg=k)
    assert den > 0, "the step did not change the weights: nothing was compared"
    assert num <= 1e-6 * den, (num, den)
    assert control > 1e-2 * den, "one image and two images give the same update: weak test"


def test_only_rank0_writes_and_eval_gathers_all_ranks(tmp_path: Path, ddp_run) -> None:
    from rfcn.entrypoints.evaluate import evaluate

    run_dir, out = ddp_run
    assert "world size 2" in out, out[-4000:]
    assert [p.name for p in (run_dir / "checkpoints").iterdir()] == ["last.pt"]
    assert len(list(run_dir.glob("events.out.tfevents.*"))) == 1  # one TensorBoard writer
    # the final table is printed once (rank 0), not by every process
    assert out.count("checkpoint: ") == 1, out[-4000:]

    trained = json.loads((run_dir / "metrics.json").read_text())
    assert trained["num_images"] == 4  # 2 per rank, gathered
    cfg = compose(
        "eval",
        [f"checkpoint={run_dir / 'checkpoints' / 'last.pt'}", f"output_dir={tmp_path / 'eval'}",
         "device=cpu", "num_workers=0"],
    )
    single = evaluate(cfg)
    for key in ("num_images", "AP", "AP50", "AP75", "APs", "APm", "APl", "per_class"):
        assert single[key] == trained[key], key


def test_only_rank0_writes_the_run_log(ddp_run) -> None:
    """The issue: one process writes checkpoints, logs and metrics. Rank 1's lines (its
    "initialised process group ... rank=1", a second "dataset ..." line) must not land in
    the shared train.log."""
    run_dir, _ = ddp_run
    log = (run_dir / "train.log").read_text()
    assert "rank=1" not in log, "rank 1 writes into the run's train.log"
    assert log.count("] - dataset coco_json:") == 1, "two processes wrote train.log"


def _children(pid: int) -> list[int]:
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            out.append(int(entry))
    return out


def _worker_with_rank(agent_pid: int, rank: int) -> int | None:
    for pid in _children(agent_pid):
        try:
            env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if f"RANK={rank}".encode() in env:
            return pid
    return None


def test_max_restarts_and_resume_recover_from_killed_worker(
    tmp_path: Path, one_object_data: list[str]
) -> None:
    """SIGKILL rank 1 after the iteration-3 checkpoint; torchrun restarts the group and
    `train.resume=true` continues from last.pt to the end."""
    run_dir = tmp_path / "ddp"
    last = run_dir / "checkpoints" / "last.pt"
    launcher = [*TORCHRUN, "--max-restarts=1", "--monitor-interval=0.5"]
    proc = start_tool(
        [TOOLS / "train.py",
         *_overrides(run_dir, one_object_data, "train.max_iter=6", "train.checkpoint_period=3",
                     "solver.ims_per_batch=1", "train.resume=true")],
        tmp_path / "ddp.log",
        launcher=launcher,
    )
    try:
        wait_for(lambda: last.is_file(), timeout=240, what="the first checkpoint", poll=0.2)
        victim = None

        def found() -> bool:
            nonlocal victim
            victim = _worker_with_rank(proc.pid, 1)
            return victim is not None

        wait_for(found, timeout=30, what="rank 1's process")
        os.kill(victim, signal.SIGKILL)
    except BaseException:
        kill_group(proc)
        raise
    rc, out = finish(proc, timeout=90)  # a successful restart takes ~30 s here
    assert rc == 0, out[-4000:]
    assert "resumed from" in out, out[-4000:]
    assert load_checkpoint(last)["iteration"] == 6
    assert json.loads((run_dir / "metrics.json").read_text())["iteration"] == 6
