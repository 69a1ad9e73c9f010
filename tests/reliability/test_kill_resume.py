"""Issue 7, bullet 1: a run killed with SIGKILL and restarted with `train.resume=true` ends
bit-identical to an uninterrupted run; a kill during a checkpoint write never leaves a torn
`last.pt`."""

from __future__ import annotations

import random
import time
from pathlib import Path

import pytest
import torch

from rfcn.checkpoint import load_checkpoint

from .run_tools import (
    TOOLS,
    finish,
    kill_group,
    start_tool,
    tiny_train_overrides,
    wait_for,
)

# Checkpoint every 10 iterations, kill after 20, resume to 25. One data worker and colour
# jitter make the data side (per-sample seeds, worker RNG) part of what must be restored.
RUN = [
    "train.max_iter=25",
    "train.checkpoint_period=10",
    "train.num_workers=1",
    "aug.color_jitter=0.2",
]


def _tensors(state: object, prefix: str = "") -> dict[str, torch.Tensor]:
    """Every tensor in a nested checkpoint entry, keyed by its path."""
    out: dict[str, torch.Tensor] = {}
    if isinstance(state, torch.Tensor):
        out[prefix] = state
    elif isinstance(state, dict):
        for k, v in state.items():
            out.update(_tensors(v, f"{prefix}/{k}"))
    elif isinstance(state, list | tuple):
        for i, v in enumerate(state):
            out.update(_tensors(v, f"{prefix}/{i}"))
    return out


def test_sigkill_after_iteration_20_then_resume_is_bit_exact(
    tmp_path: Path, synth_cache: Path
) -> None:
    """The reference run and the run to be killed go side by side (one thread each)."""
    ref_dir, run_dir = tmp_path / "reference", tmp_path / "killed"
    ref = start_tool(
        [TOOLS / "train.py", *tiny_train_overrides(ref_dir, synth_cache, *RUN)],
        tmp_path / "reference.log",
    )
    victim = start_tool(
        [TOOLS / "train.py", *tiny_train_overrides(run_dir, synth_cache, *RUN)],
        tmp_path / "killed-1.log",
    )
    last = run_dir / "checkpoints" / "last.pt"
    seen: list[int] = []
    inode = [None]

    def reached_20() -> bool:
        if victim.poll() is not None:
            text = (tmp_path / "killed-1.log").read_text(errors="replace")
            pytest.fail(f"training exited early ({victim.returncode}):\n{text[-3000:]}")
        try:
            st = last.stat()
        except FileNotFoundError:
            return False
        if st.st_ino == inode[0]:
            return False
        inode[0] = st.st_ino
        # every version a reader can see is complete (atomic replace)
        seen.append(int(load_checkpoint(last)["iteration"]))
        return seen[-1] >= 20

    try:
        wait_for(reached_20, timeout=240, what="last.pt at iteration 20", poll=0.1)
    finally:
        kill_group(victim)  # SIGKILL, data worker included
        victim.wait()
        victim._log_file.close()  # type: ignore[attr-defined]
    assert seen[-1] == 20, seen
    assert seen[0] == 10, seen
    assert load_checkpoint(last)["iteration"] == 20  # the kill left last.pt intact

    resumed = start_tool(
        [TOOLS / "train.py", *tiny_train_overrides(run_dir, synth_cache, *RUN, "train.resume=1")],
        tmp_path / "killed-2.log",
    )
    rc, out = finish(resumed, timeout=240)
    assert rc == 0, out[-3000:]
    assert "resumed from" in out and "at iteration 20" in out, out[-3000:]
    rc, ref_out = finish(ref, timeout=240)
    assert rc == 0, ref_out[-3000:]

    got = load_checkpoint(last)
    want = load_checkpoint(ref_dir / "checkpoints" / "last.pt")
    assert got["iteration"] == want["iteration"] == 25
    assert got["model"].keys() == want["model"].keys()
    for k, v in want["model"].items():
        assert torch.equal(v, got["model"][k]), f"weights differ after resume: {k}"
    # optimizer (momentum buffers), scheduler and RNG state are part of "the same run" too
    for section in ("optimizer", "rng"):
        a, b = _tensors(want[section]), _tensors(got[section])
        assert a.keys() == b.keys(), section
        for k in a:
            assert torch.equal(a[k], b[k]), f"{section}{k} differs after resume"
    assert got["scheduler"]["last_epoch"] == want["scheduler"]["last_epoch"]


WRITER = r"""
import sys, torch
from rfcn.checkpoint import save_checkpoint
path, start = sys.argv[1], int(sys.argv[2])
for i in range(start, start + 10_000):
    # ~32 MB of one value per version: a torn file could not hold one value throughout
    save_checkpoint({"model": {"w": torch.full((8_000_000,), float(i))}, "iteration": i}, path)
    print("saved", i, flush=True)
"""


def test_sigkill_during_checkpoint_writes_never_tears_last_pt(tmp_path: Path) -> None:
    """A process that does nothing but rewrite last.pt with `save_checkpoint` is killed at
    random moments (so nearly always mid-write); each time the file must load and hold one
    complete version, at least the last one reported saved."""
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    path = tmp_path / "checkpoints" / "last.pt"
    rng = random.Random(7)
    start = 0
    for attempt in range(3):
        log = tmp_path / f"writer-{attempt}.log"
        proc = start_tool([script, path, start], log)
        try:
            wait_for(lambda f=log: "saved" in f.read_text(), timeout=60, what="a first save")
            time.sleep(rng.uniform(0.0, 0.4))
        finally:
            kill_group(proc)
            proc.wait()
            proc._log_file.close()  # type: ignore[attr-defined]
        lines = log.read_text().splitlines()
        saved = [int(line.split()[1]) for line in lines if line.startswith("saved")]
        state = load_checkpoint(path)
        it = int(state["iteration"])
        assert it >= saved[-1]
        assert torch.equal(state["model"]["w"], torch.full((8_000_000,), float(it)))
        start = it + 1
