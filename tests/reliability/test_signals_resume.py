"""Issue 20, "stop and resume as a user does": Ctrl-C (SIGINT to the whole process group, as
a terminal sends it) and SIGTERM (what SLURM and Kubernetes send) save the current iteration,
print how to resume and exit 130 / 143 without a traceback; `train.resume=true` with nothing
but the run folder restores that run's configuration and ends bit-identical to an
uninterrupted run; a finished run says so and exits 0."""

from __future__ import annotations

import re
import signal
import time
from pathlib import Path

import pytest
import torch

from rfcn.checkpoint import load_checkpoint

from .run_tools import TOOLS, finish, kill_group, run_tool, start_tool, tiny_train_overrides

RUN = ["train.max_iter=24", "train.checkpoint_period=10", "train.num_workers=1",
       "aug.color_jitter=0.2"]


def _iteration_logged(log: Path) -> int:
    found = re.findall(r"iter (\d+)/", log.read_text(errors="replace"))
    return int(found[-1]) if found else 0


def _interrupt(tmp_path: Path, run_dir: Path, cache: Path, sig: int, name: str) -> str:
    """Start a run, send `sig` to its process group past iteration 12, return its output."""
    log = tmp_path / f"{name}.log"
    proc = start_tool([TOOLS / "train.py", *tiny_train_overrides(run_dir, cache, *RUN)], log)
    end = time.monotonic() + 240
    while _iteration_logged(log) < 12:
        if proc.poll() is not None or time.monotonic() > end:
            kill_group(proc)
            pytest.fail(f"run ended or hung before iteration 12:\n{log.read_text()[-3000:]}")
        time.sleep(0.05)
    kill_group(proc, sig)  # the tool and its data worker, as a terminal's Ctrl-C
    rc, out = finish(proc, timeout=120)
    want = {signal.SIGINT: 130, signal.SIGTERM: 143}[sig]
    assert rc == want, out[-3000:]
    assert "Traceback" not in out, out[-3000:]
    assert f"hydra.run.dir={run_dir} train.resume=true" in out, out[-2000:]
    return out


def _assert_same_weights(got_path: Path, want_path: Path) -> None:
    got, want = load_checkpoint(got_path), load_checkpoint(want_path)
    assert got["iteration"] == want["iteration"] == 24
    for k, v in want["model"].items():
        assert torch.equal(v, got["model"][k]), f"weights differ after resume: {k}"
    for k, v in want["optimizer"]["state"].items():
        for name, t in v.items():
            if isinstance(t, torch.Tensor):
                assert torch.equal(t, got["optimizer"]["state"][k][name]), (k, name)


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory, synth_cache: Path) -> Path:
    run_dir = tmp_path_factory.mktemp("signals") / "reference"
    rc, out = run_tool([TOOLS / "train.py", *tiny_train_overrides(run_dir, synth_cache, *RUN)],
                       run_dir.parent / "reference.log", timeout=300)
    assert rc == 0, out[-3000:]
    return run_dir / "checkpoints" / "last.pt"


def test_ctrl_c_saves_the_current_iteration_and_the_run_folder_alone_resumes_it(
    tmp_path: Path, synth_cache: Path, reference: Path
) -> None:
    run_dir = tmp_path / "interrupted"
    out = _interrupt(tmp_path, run_dir, synth_cache, signal.SIGINT, "sigint")
    saved = int(load_checkpoint(run_dir / "checkpoints" / "last.pt")["iteration"])
    assert saved >= 12 and saved != 10, out[-2000:]  # not the periodic checkpoint's
    assert f"SIGINT at iteration {saved}" in out
    # what the printed line says to type: the run folder and train.resume, nothing else
    rc, out = run_tool([TOOLS / "train.py", f"hydra.run.dir={run_dir}", "train.resume=true"],
                       tmp_path / "resume.log", timeout=300)
    assert rc == 0, out[-3000:]
    assert f"at iteration {saved}" in out
    _assert_same_weights(run_dir / "checkpoints" / "last.pt", reference)
    # again: the run is finished, it says so and exits 0 at once
    rc, out = run_tool([TOOLS / "train.py", f"hydra.run.dir={run_dir}", "train.resume=true"],
                       tmp_path / "again.log", timeout=120)
    assert rc == 0, out[-3000:]
    assert "already finished at iteration 24" in out, out[-2000:]


def test_sigterm_saves_and_a_key_typed_at_resume_overrides_the_run_and_is_logged(
    tmp_path: Path, synth_cache: Path, reference: Path
) -> None:
    run_dir = tmp_path / "preempted"
    out = _interrupt(tmp_path, run_dir, synth_cache, signal.SIGTERM, "sigterm")
    assert "SIGTERM at iteration" in out
    rc, out = run_tool([TOOLS / "train.py", f"hydra.run.dir={run_dir}", "train.resume=true",
                        "train.log_period=5"], tmp_path / "resume.log", timeout=300)
    assert rc == 0, out[-3000:]
    assert "from the command line, train.log_period: 1 -> 5" in out, out[-3000:]
    _assert_same_weights(run_dir / "checkpoints" / "last.pt", reference)
