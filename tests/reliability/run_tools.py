"""Helpers for the reliability tests (issue 7): a tiny model, a tiny generated dataset,
and helpers that run the real tools (`tools/train.py`, `tools/eval.py`, `torchrun`) as
subprocesses, always with a timeout so that a hang fails the test instead of the suite.

Every training process runs with one intra-op thread: bit-exact comparisons need the same
reduction order in every run, and the machine is shared.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
TOOLS = REPO / "tools"

# The synthetic dataset parameters the tiny runs use (the cache key of the generator).
SYNTH = {"num_train": 8, "num_val": 2, "image_size": 64, "seed": 0}

# One iteration of this model is ~0.1-0.3 s of CPU: 64 px images, layer4 + heads trained.
TINY_MODEL = [
    "model.train_min_sizes=null",
    "model.aspect_ratios=[0.5,1.0,2.0]",
    "model.min_size=64",
    "model.max_size=64",
    "model.k=3",
    "model.head_dim=32",
    "model.rpn_dim=32",
    "model.anchor_sizes=[32,64]",
    "model.rpn_pre_nms_top_n_train=50",
    "model.rpn_post_nms_top_n_train=16",
    "model.rpn_pre_nms_top_n_test=50",
    "model.rpn_post_nms_top_n_test=16",
    "model.box_batch_size_per_image=16",
    "model.rpn_batch_size_per_image=32",
    "model.trainable_layers=1",
]

TINY_TRAIN = [
    "solver.ims_per_batch=2",
    "solver.warmup_iters=2",
    "train.device=cpu",
    "train.num_threads=1",
    "train.num_workers=0",
    "train.num_vis_images=0",
    "train.progress=false",
    "train.log_period=1",
]


def synthetic_overrides(cache: Path) -> list[str]:
    return [f"dataset.root={cache}"] + [f"dataset.{k}={v}" for k, v in SYNTH.items()]


def tiny_train_overrides(run_dir: Path, cache: Path, *extra: str) -> list[str]:
    """Overrides for `tools/train.py` (Hydra run dir = `run_dir`)."""
    return [
        f"hydra.run.dir={run_dir}",
        *synthetic_overrides(cache),
        *TINY_MODEL,
        *TINY_TRAIN,
        *extra,
    ]


def subprocess_env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        OMP_NUM_THREADS="1",
        MKL_NUM_THREADS="1",
        NUMBA_NUM_THREADS="1",
        PYTHONUNBUFFERED="1",
        PYTHONPATH=str(REPO) + os.pathsep + env.get("PYTHONPATH", ""),
    )
    env.pop("HYDRA_FULL_ERROR", None)
    return env


def start_tool(args: Sequence[str], log: Path, *, launcher: Sequence[str] | None = None):
    """Start `python tools/<...>` (or `launcher + args`) in its own process group; stdout and
    stderr go to `log` (files, not pipes: a full pipe would block the child)."""
    cmd = list(launcher) if launcher is not None else [sys.executable]
    cmd += [str(a) for a in args]
    out = open(log, "wb")  # noqa: SIM115  (closed by finish())
    proc = subprocess.Popen(
        cmd,
        cwd=REPO,
        env=subprocess_env(),
        stdout=out,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    proc._log_file = out  # type: ignore[attr-defined]
    proc._log_path = log  # type: ignore[attr-defined]
    return proc


def kill_group(proc: subprocess.Popen, sig: int = signal.SIGKILL) -> None:
    """Signal the process group the test started (the tool and its own children only)."""
    try:
        os.killpg(proc.pid, sig)
    except ProcessLookupError:
        pass


def finish(proc: subprocess.Popen, timeout: float) -> tuple[int, str]:
    """Wait for a started tool; on timeout kill its group and fail (a hang is a bug)."""
    try:
        rc = proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        kill_group(proc)
        proc.wait()
        proc._log_file.close()  # type: ignore[attr-defined]
        text = Path(proc._log_path).read_text(errors="replace")  # type: ignore[attr-defined]
        pytest.fail(f"process hung for {timeout}s: {proc.args}\n--- tail ---\n{text[-4000:]}")
    proc._log_file.close()  # type: ignore[attr-defined]
    return rc, Path(proc._log_path).read_text(errors="replace")  # type: ignore[attr-defined]


def run_tool(args: Sequence[str], log: Path, timeout: float = 150, **kw) -> tuple[int, str]:
    return finish(start_tool(args, log, **kw), timeout)


def wait_for(predicate: Callable[[], bool], timeout: float, what: str, poll: float = 0.05) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return
        time.sleep(poll)
    pytest.fail(f"timed out after {timeout}s waiting for {what}")


def compose_train(output_dir: Path, cache: Path, *extra: str):
    """A composed train config for in-process `rfcn.entrypoints.train.train` (no Hydra run)."""
    return compose("train", [f"output_dir={output_dir}", *synthetic_overrides(cache),
                             *TINY_MODEL, *TINY_TRAIN, *extra])


def compose(name: str, overrides: Sequence[str]):
    import hydra

    import rfcn.config  # noqa: F401  (registers the schemas)

    # infer.yaml has a folder of its own (its `model=FILE` key is not the model group)
    folder = REPO / "configs" / ("standalone" if name == "infer" else "")
    with hydra.initialize_config_dir(config_dir=str(folder), version_base="1.3"):
        return hydra.compose(name, overrides=list(overrides))
