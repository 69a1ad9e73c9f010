"""Issue 7, bullet 3: an exploding learning rate (`solver.base_lr=1e6`) ends the run with a
non-zero exit and a message naming the last good checkpoint; non-finite steps are skipped,
logged with the iteration and loss terms and counted in TensorBoard; no non-finite checkpoint
replaces a good one; never a hang (every process runs under a timeout)."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
import torch

from rfcn.checkpoint import load_checkpoint

from .run_tools import TOOLS, finish, run_tool, start_tool, tiny_train_overrides

EXPLODE = [
    "train.max_iter=60",
    "train.max_nonfinite_steps=3",
    "solver.base_lr=1e6",
    "solver.warmup_iters=0",
]


@pytest.fixture(scope="module")
def good_run(tmp_path_factory: pytest.TempPathFactory, synth_cache: Path) -> Path:
    """Two normal iterations: a good last.pt at iteration 2."""
    out = tmp_path_factory.mktemp("good")
    rc, text = run_tool(
        [TOOLS / "train.py", *tiny_train_overrides(out / "run", synth_cache,
                                                   "train.max_iter=2",
                                                   "train.checkpoint_period=1")],
        out / "good.log",
    )
    assert rc == 0, text[-3000:]
    return out / "run"


def _scalars(run_dir: Path, tag: str) -> list[float]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
    acc.Reload()
    if tag not in acc.Tags()["scalars"]:
        return []
    return [e.value for e in acc.Scalars(tag)]


def _assert_finite_checkpoint(path: Path, min_iteration: int) -> None:
    kept = load_checkpoint(path)
    assert kept["iteration"] >= min_iteration
    for k, v in kept["model"].items():
        if v.is_floating_point():
            assert torch.isfinite(v).all(), f"non-finite weights written to {path}: {k}"


def test_exploding_lr_stops_with_message_and_keeps_good_checkpoint(
    tmp_path: Path, synth_cache: Path, good_run: Path
) -> None:
    """Two fresh runs side by side with base_lr=1e6, each in a directory that already holds
    a good last.pt: checkpointing every iteration (a non-finite model must not be written)
    and never (the non-finite-loss guard must stop it)."""
    runs = {}
    for name, period in (("every-iteration", 1), ("no-checkpoints", 1000)):
        run_dir = tmp_path / name
        shutil.copytree(good_run, run_dir)
        runs[name] = (
            run_dir,
            start_tool(
                [TOOLS / "train.py",
                 *tiny_train_overrides(run_dir, synth_cache, *EXPLODE,
                                       f"train.checkpoint_period={period}")],
                tmp_path / f"{name}.log",
            ),
        )
    for name, (run_dir, proc) in runs.items():
        rc, out = finish(proc, timeout=150)
        last = run_dir / "checkpoints" / "last.pt"
        assert rc not in (0, None), f"{name}: training did not stop\n{out[-3000:]}"
        assert "Traceback" not in out, f"{name}: a traceback instead of a message\n{out[-3000:]}"
        error = [line for line in out.splitlines() if line.startswith("error:")]
        assert error, f"{name}: no error message\n{out[-3000:]}"
        assert "non-finite" in error[-1] or "not finite" in error[-1], error[-1]
        assert (
            f"The last good checkpoint is {last}" in error[-1]
            or "No checkpoint was written by this run" in error[-1]
        ), error[-1]
        # train.max_loss stops the run as soon as the loss explodes (iteration 2 with a
        # checkpoint every iteration): the kept checkpoint is the last finite one.
        _assert_finite_checkpoint(last, min_iteration=1)
        assert int(re.search(r"iteration (\d+)", error[-1]).group(1)) < 60

    # the non-finite-loss path: skipped steps logged with iteration and loss terms, counted
    run_dir, _ = runs["no-checkpoints"]
    text = (tmp_path / "no-checkpoints.log").read_text()
    skipped = re.findall(
        r"iteration (\d+): non-finite (?:or exploding )?loss or gradient, step skipped.*", text)
    assert len(skipped) >= 3, text[-3000:]
    line = next(s for s in text.splitlines() if "step skipped" in s)
    assert "loss_classifier=" in line and "loss_objectness=" in line, line
    assert re.search(r"consecutive non-finite (or exploding )?steps", text)
    counted = _scalars(run_dir, "train/nonfinite_steps")
    assert counted and max(counted) >= 1, counted


def test_resume_does_not_silently_ignore_exploding_lr(
    tmp_path: Path, synth_cache: Path, good_run: Path
) -> None:
    """`train.resume=true solver.base_lr=1e6` from a good checkpoint: the new learning rate
    must either apply (and the run stop on non-finite steps, keeping the good checkpoint) or
    be refused with a message naming the changed setting; training on at the checkpoint's
    old learning rate without a word is the bug."""
    run_dir = tmp_path / "resumed"
    shutil.copytree(good_run, run_dir)
    rc, out = run_tool(
        [TOOLS / "train.py",
         *tiny_train_overrides(run_dir, synth_cache, *EXPLODE, "train.resume=true",
                               "train.max_iter=20", "train.checkpoint_period=1")],
        tmp_path / "resumed.log",
    )
    _assert_finite_checkpoint(run_dir / "checkpoints" / "last.pt", min_iteration=2)
    assert rc != 0, "trained at the checkpoint's learning rate, ignoring solver.base_lr=1e6"
    error = [line for line in out.splitlines() if line.startswith("error:")]
    assert error and ("non-finite" in error[-1] or "base_lr" in error[-1]), out[-3000:]
