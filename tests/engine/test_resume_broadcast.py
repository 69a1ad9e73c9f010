"""Resume on several nodes without a shared run directory: rank 0's last.pt reaches every
rank, and a checkpoint rank 0 refuses stops every rank (none is left waiting)."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from rfcn.checkpoint import save_checkpoint
from rfcn.entrypoints.train import _load_resume_checkpoint


def _worker(rank: int, paths: list[str], store_file: str, result_dir: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{store_file}", rank=rank,
                            world_size=len(paths))
    try:
        ckpt = _load_resume_checkpoint(Path(paths[rank]))
        out = ("ok", None if ckpt is None else int(ckpt["iteration"]))
    except Exception as e:  # noqa: BLE001 - reported to the test
        out = (type(e).__name__, str(e))
    finally:
        dist.destroy_process_group()
    Path(result_dir, f"{rank}.pkl").write_bytes(pickle.dumps(out))


def _run(tmp_path: Path, rank0_file: Path) -> list[tuple[str, object]]:
    # rank 1's run dir lacks last.pt, as on a second node without a shared file system
    paths = [str(rank0_file), str(tmp_path / "node1" / "checkpoints" / "last.pt")]
    store = tmp_path / f"store-{rank0_file.name}"
    mp.spawn(_worker, args=(paths, str(store), str(tmp_path)), nprocs=2, join=True)
    return [pickle.loads((tmp_path / f"{r}.pkl").read_bytes()) for r in range(2)]


def test_every_rank_resumes_from_rank0s_checkpoint(tmp_path: Path) -> None:
    good = tmp_path / "node0" / "checkpoints" / "last.pt"
    save_checkpoint({"model": {"w": torch.ones(2)}, "iteration": 40}, good)
    assert _run(tmp_path, good) == [("ok", 40), ("ok", 40)]


def test_refused_checkpoint_stops_every_rank(tmp_path: Path) -> None:
    bad = tmp_path / "node0" / "bad.pt"
    bad.parent.mkdir(parents=True)
    bad.write_bytes(b"not a checkpoint")
    results = _run(tmp_path, bad)
    assert [kind for kind, _ in results] == ["CheckpointError", "CheckpointError"], results
    assert "rank 0" in str(results[1][1]) and str(bad) in str(results[1][1])


def test_no_checkpoint_anywhere_starts_from_scratch(tmp_path: Path) -> None:
    assert _run(tmp_path, tmp_path / "none" / "last.pt") == [("ok", None), ("ok", None)]


def test_single_process_reads_the_file(tmp_path: Path) -> None:
    assert not dist.is_initialized() and os.environ.get("WORLD_SIZE", "1") == "1"
    path = tmp_path / "last.pt"
    assert _load_resume_checkpoint(path) is None
    save_checkpoint({"model": {}, "iteration": 3}, path)
    assert _load_resume_checkpoint(path)["iteration"] == 3
