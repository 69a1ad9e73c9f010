"""Checkpoints: atomic write, weights-only loading, hostile payloads, RNG, shape matching."""

from __future__ import annotations

import os
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from rfcn.checkpoint import (
    CheckpointError,
    capture_rng_state,
    load_checkpoint,
    load_model_state,
    restore_rng_state,
    save_checkpoint,
)


class _Tiny(nn.Module):
    def __init__(self, num_classes: int, width: int = 4) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.trunk = nn.Linear(3, width)
        self.cls = nn.Linear(width, num_classes)


class _Payload:
    """Unpickling this would create a marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def _ckpt(model: nn.Module, classes: list[str], arch: str = "tiny") -> dict:
    return {"model": model.state_dict(), "class_names": classes, "architecture": arch}


def test_roundtrip_weights_only(tmp_path: Path) -> None:
    model = _Tiny(3)
    path = tmp_path / "sub" / "last.pt"
    state = {
        **_ckpt(model, ["__background__", "a", "b"]),
        "iteration": 7,
        "label_to_cat_id": {1: 10, 2: 20},
        "config": "train:\n  max_iter: 3\n",
        "rng": capture_rng_state(),
    }
    save_checkpoint(state, path)
    assert [p.name for p in path.parent.iterdir()] == ["last.pt"]  # no temp file left
    loaded = load_checkpoint(path)
    assert loaded["iteration"] == 7 and loaded["label_to_cat_id"] == {1: 10, 2: 20}
    other = _Tiny(3)
    load_model_state(other, loaded)
    for a, b in zip(model.parameters(), other.parameters(), strict=True):
        assert torch.equal(a, b)


def test_overwrite_keeps_old_file_on_failure(tmp_path: Path) -> None:
    path = tmp_path / "last.pt"
    save_checkpoint({"model": {}, "iteration": 1}, path)

    class Unsaveable:
        pass

    with pytest.raises(Exception):  # noqa: B017 - torch.save's own error type
        save_checkpoint({"model": {}, "iteration": 2, "bad": Unsaveable()}, path)
    assert load_checkpoint(path)["iteration"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]


def test_hostile_pickle_refused_and_never_runs(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    torch.save({"model": {}, "payload": _Payload(marker)}, path)
    assert not marker.exists()
    with pytest.raises(CheckpointError, match="refusing to load"):
        load_checkpoint(path)
    assert not marker.exists()


def test_not_a_checkpoint(tmp_path: Path) -> None:
    path = tmp_path / "x.pt"
    torch.save([torch.zeros(1)], path)
    with pytest.raises(CheckpointError, match="not an rfcn checkpoint"):
        load_checkpoint(path)
    garbage = tmp_path / "garbage.pt"
    # random bytes fail in many places of the unpickler (seen: IndexError); all are refused
    blobs = [os.urandom(64)] + [np.random.default_rng(s).bytes(64) for s in range(200)]
    for blob in blobs:
        garbage.write_bytes(blob)
        with pytest.raises(CheckpointError, match="garbage.pt"):
            load_checkpoint(garbage)
    with pytest.raises(FileNotFoundError):
        load_checkpoint(tmp_path / "missing.pt")


def test_rng_roundtrip(tmp_path: Path) -> None:
    random.gauss(0, 1)  # populate python's cached gaussian
    state = capture_rng_state()
    save_checkpoint({"model": {}, "rng": state}, tmp_path / "c.pt")
    expected = (torch.rand(3), np.random.rand(3), random.random())
    restore_rng_state(load_checkpoint(tmp_path / "c.pt")["rng"])
    got = (torch.rand(3), np.random.rand(3), random.random())
    assert torch.equal(expected[0], got[0])
    assert np.array_equal(expected[1], got[1])
    assert expected[2] == got[2]


def test_fine_tune_with_another_class_count_reinitialises_head(caplog) -> None:
    source = _Tiny(5)
    target = _Tiny(3)
    fresh_cls = target.cls.weight.detach().clone()
    with caplog.at_level("INFO"):
        diff = load_model_state(
            target, _ckpt(source, ["bg", "a", "b", "c", "d"]), allow_class_change=True
        )
    assert set(diff.shape_mismatch) == {"cls.weight", "cls.bias"}
    assert torch.equal(target.trunk.weight, source.trunk.weight)
    assert torch.equal(target.cls.weight, fresh_cls)
    assert "re-initialised cls.weight" in caplog.text


def test_exact_load_names_the_differences() -> None:
    with pytest.raises(CheckpointError, match=r"5 classes, the model 3.*model\.weights"):
        load_model_state(_Tiny(3), _ckpt(_Tiny(5), ["bg", "a", "b", "c", "d"]))
    # same class count, other width: a different architecture, not a class change
    with pytest.raises(CheckpointError, match=r"trunk\.weight \(8, 3\) vs \(4, 3\)"):
        load_model_state(
            _Tiny(3), _ckpt(_Tiny(3, width=8), ["bg", "a", "b"]), allow_class_change=True
        )
    other = nn.Sequential(nn.Linear(3, 4))
    with pytest.raises(CheckpointError, match="the checkpoint is a other, the model a tiny"):
        load_model_state(
            _Tiny(3), {"model": other.state_dict(), "architecture": "other"}, architecture="tiny"
        )
