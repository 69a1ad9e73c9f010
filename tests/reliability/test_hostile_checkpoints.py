"""Issue 7, bullet 2: checkpoints carrying pickled code are refused before any of it runs,
whichever door they come through (tools/eval.py, model.weights=, train.resume=true); a
checkpoint of another architecture or class count is refused with a message naming the
difference."""

from __future__ import annotations

import pickle
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from rfcn import assembly
from rfcn import config as rc
from rfcn.checkpoint import CheckpointError, load_checkpoint, save_checkpoint

from .run_tools import TOOLS, compose, compose_train, finish, start_tool, tiny_train_overrides


class Payload:
    """Unpickling this calls `open(marker, "w")`: the marker file proves the code ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _zip_top_level(path: Path, marker: Path) -> None:
    torch.save({"model": {"w": torch.zeros(2)}, "payload": Payload(marker)}, path)


def _zip_inside_state_dict(path: Path, marker: Path) -> None:
    torch.save({"model": {"w": torch.zeros(2), "b": Payload(marker)}, "iteration": 3}, path)


def _legacy_format(path: Path, marker: Path) -> None:
    torch.save(
        {"model": {"w": torch.zeros(2)}, "payload": Payload(marker)},
        path,
        _use_new_zipfile_serialization=False,
    )


def _raw_pickle(path: Path, marker: Path) -> None:
    path.write_bytes(pickle.dumps({"model": {}, "payload": Payload(marker)}))


WRITERS: dict[str, Callable[[Path, Path], None]] = {
    "zip-top-level": _zip_top_level,
    "zip-in-state-dict": _zip_inside_state_dict,
    "legacy-format": _legacy_format,
    "raw-pickle": _raw_pickle,
}


@pytest.mark.parametrize("kind", sorted(WRITERS))
def test_load_checkpoint_refuses_pickle_payload(tmp_path: Path, kind: str) -> None:
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pt"
    WRITERS[kind](evil, marker)
    with pytest.raises(CheckpointError, match="refusing to load"):
        load_checkpoint(evil)
    assert not marker.exists(), "the checkpoint's code ran"


def test_tools_refuse_pickle_payload(tmp_path: Path, synth_cache: Path) -> None:
    """The three doors, as a user meets them: real tool processes (run side by side)."""
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pt"
    _zip_top_level(evil, marker)
    resume_dir = tmp_path / "resume"
    (resume_dir / "checkpoints").mkdir(parents=True)
    _zip_inside_state_dict(resume_dir / "checkpoints" / "last.pt", marker)
    procs = {
        "eval": start_tool(
            [TOOLS / "eval.py", f"checkpoint={evil}", f"hydra.run.dir={tmp_path / 'eval'}",
             "device=cpu", "num_workers=0"],
            tmp_path / "eval.log",
        ),
        "model.weights": start_tool(
            [TOOLS / "train.py",
             *tiny_train_overrides(tmp_path / "ft", synth_cache, f"model.weights={evil}")],
            tmp_path / "ft.log",
        ),
        "train.resume": start_tool(
            [TOOLS / "train.py",
             *tiny_train_overrides(resume_dir, synth_cache, "train.resume=true")],
            tmp_path / "resume.log",
        ),
    }
    for door, proc in procs.items():
        rc_, out = finish(proc, timeout=120)
        assert rc_ != 0, f"{door}: accepted a hostile checkpoint\n{out[-2000:]}"
        assert "refusing to load" in out and "weights-only" in out, f"{door}:\n{out[-2000:]}"
        assert "error: " in out and "Traceback" not in out, f"{door}:\n{out[-2000:]}"
    assert not marker.exists(), "the checkpoint's code ran"
    assert not (resume_dir / "metrics.json").exists()


# ---- incompatible checkpoints ------------------------------------------------------------


def _real_checkpoint(path: Path, cache: Path, num_classes: int, *overrides: str) -> Path:
    """An rfcn checkpoint as the trainer writes it (fresh weights, no training)."""
    cfg = compose_train(path.parent, cache, *overrides)
    model = assembly.build_model(cfg.model, num_classes, load_backbone=False)
    names = ["__background__", "circle", "rectangle", "triangle", "cross"][:num_classes]
    save_checkpoint(
        {
            "model": model.state_dict(),
            "class_names": names,
            "label_to_cat_id": {i: i for i in range(1, num_classes)},
            "config": rc.to_yaml(cfg),
            "architecture": cfg.model.name,
            "iteration": 0,
        },
        path,
    )
    return path


@pytest.fixture(scope="module")
def r18_checkpoint(tmp_path_factory: pytest.TempPathFactory, synth_cache: Path) -> Path:
    return _real_checkpoint(tmp_path_factory.mktemp("r18") / "r18.pt", synth_cache, 5)


@pytest.fixture(scope="module")
def three_class_checkpoint(tmp_path_factory: pytest.TempPathFactory, synth_cache: Path) -> Path:
    return _real_checkpoint(tmp_path_factory.mktemp("c3") / "c3.pt", synth_cache, 3)


def test_fine_tune_from_another_architecture_says_what_differs(
    tmp_path: Path, synth_cache: Path, r18_checkpoint: Path
) -> None:
    from rfcn.entrypoints.train import train

    cfg = compose_train(tmp_path, synth_cache, "model=rfcn_r50", f"model.weights={r18_checkpoint}")
    with pytest.raises(CheckpointError) as info:
        train(cfg)
    message = str(info.value)
    assert "rfcn_resnet18" in message and "rfcn_resnet50" in message, message
    assert "missing" in message or "unknown" in message, message


def test_resume_with_another_architecture_says_what_differs(
    tmp_path: Path, synth_cache: Path, r18_checkpoint: Path
) -> None:
    from rfcn.entrypoints.train import train

    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "last.pt").write_bytes(r18_checkpoint.read_bytes())
    cfg = compose_train(tmp_path, synth_cache, "model=rfcn_r50", "train.resume=true")
    with pytest.raises(CheckpointError) as info:
        train(cfg)
    message = str(info.value)
    assert "rfcn_resnet18" in message and "rfcn_resnet50" in message, message


def test_resume_with_another_class_count_says_what_differs(
    tmp_path: Path, synth_cache: Path, three_class_checkpoint: Path
) -> None:
    from rfcn.entrypoints.train import train

    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "last.pt").write_bytes(three_class_checkpoint.read_bytes())
    cfg = compose_train(tmp_path, synth_cache, "train.resume=true")
    with pytest.raises(CheckpointError) as info:
        train(cfg)
    message = str(info.value)
    assert "3 classes" in message and "now has 5" in message, message
    assert "start a new run" in message and "model.weights" in message, message  # fine-tune


def test_eval_on_dataset_with_other_classes_says_what_differs(
    tmp_path: Path, synth_cache: Path, three_class_checkpoint: Path
) -> None:
    from rfcn.entrypoints.evaluate import evaluate

    cfg = compose(
        "eval",
        [
            f"checkpoint={three_class_checkpoint}",
            "dataset=synthetic",
            f"dataset.root={synth_cache}",
            "dataset.num_train=8",
            "dataset.num_val=2",
            "dataset.image_size=64",
            f"output_dir={tmp_path}",
            "device=cpu",
            "num_workers=0",
        ],
    )
    with pytest.raises(ValueError) as info:
        evaluate(cfg)
    message = str(info.value)
    # both class lists are named: the checkpoint's two classes and the dataset's four
    assert "['circle', 'rectangle']" in message, message
    assert "['circle', 'rectangle', 'triangle', 'cross']" in message, message
