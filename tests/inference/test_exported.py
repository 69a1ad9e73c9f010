"""rfcn.inference.exported: opening an exported file refuses what it cannot run, clearly.
(An ONNX and a .pt2 file running through it like the checkpoint: tests/tools/test_export_cli.py.)"""

from __future__ import annotations

from pathlib import Path

import pytest

from rfcn.inference.exported import load_exported


@pytest.mark.parametrize("runtime", ["onnxruntime", "pt2"])
def test_a_missing_file_is_not_found(tmp_path: Path, runtime: str) -> None:
    with pytest.raises(FileNotFoundError, match="exported model not found"):
        load_exported(tmp_path / "none.onnx", runtime)


def test_an_unknown_runtime_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "m.onnx"
    path.write_bytes(b"")
    with pytest.raises(ValueError, match="runtime must be one of"):
        load_exported(path, "torch")
