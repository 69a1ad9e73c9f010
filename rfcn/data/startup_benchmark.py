"""`tools/train.py dataset=coco` end to end on a COCO-size folder (scripts/bench_data.py):
seconds to the first training iteration and the whole process tree's peak PSS (main process
and its loader workers), with the index cache cold (emptied) and warm.

`write_coco_root` lays generated annotation files out as `dataset=coco` expects them
(`annotations/instances_{train,val}2017.json`, `train2017/`, `val2017/`, as symlinks);
`train_end_to_end` runs the tool in a child process with its own cache directory
(`$RFCN_CACHE_DIR`) and watches it (rfcn.data.process_memory.run_watched).
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path
from typing import Any

from rfcn.data.process_memory import run_watched
from rfcn.data.synthetic_coco import SyntheticCoco

__all__ = ["FIRST_ITERATION", "train_end_to_end", "write_coco_root"]

FIRST_ITERATION = r"\biter 1/\d+"  # the trainer's log line of iteration 1 (train.log_period=1)


def write_coco_root(root: Path, train: SyntheticCoco, val: SyntheticCoco) -> Path:
    """`root` with COCO 2017's layout, its files symlinked to `train` and `val`."""
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    for split, syn in (("train2017", train), ("val2017", val)):
        for link, target in ((root / "annotations" / f"instances_{split}.json", syn.ann_file),
                             (root / split, syn.image_dir)):
            if link.is_symlink() or link.exists():
                link.unlink()
            link.symlink_to(Path(target).resolve())
    return root


def train_end_to_end(repo: Path, root: Path, cache_dir: Path, run_dir: Path, *,
                     cold: bool, workers: int = 4, iters: int = 20,
                     keys: tuple[str, ...] = ()) -> dict[str, Any]:
    """One `tools/train.py dataset=coco` run (R-18 at 160 px unless `keys` say otherwise);
    `cold` empties the cache directory first. Returns seconds to iteration 1, wall, peak tree
    PSS, and the log's last lines when the run failed."""
    if cold:
        shutil.rmtree(cache_dir, ignore_errors=True)
    shutil.rmtree(run_dir, ignore_errors=True)
    env = {**os.environ, "RFCN_CACHE_DIR": str(cache_dir)}
    env.pop("OMP_NUM_THREADS", None)
    cmd = [sys.executable, str(repo / "tools" / "train.py"), "dataset=coco",
           f"dataset.root={root}", "model.min_size=160", "model.max_size=256",
           f"train.num_workers={workers}", f"train.max_iter={iters}", "train.log_period=1",
           "train.progress=false", "train.curves=false", f"hydra.run.dir={run_dir}", *keys]
    run = run_watched(cmd, FIRST_ITERATION, cwd=str(repo), env=env)
    out: dict[str, Any] = {"first_iteration_s": run.first_match_s, "wall_s": run.wall_s,
                           "peak_tree_pss": run.peak_tree_pss, "returncode": run.returncode,
                           "command": " ".join(cmd[1:])}
    if run.returncode != 0:
        out["tail"] = run.tail
    return out
