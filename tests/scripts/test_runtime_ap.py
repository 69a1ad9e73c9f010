"""scripts/runtime_ap.py scores one model through each runtime with the project's evaluator
(--quick: a tiny random model on a tiny synthetic set; no checkpoint, nothing trained)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def _run(*args: str) -> str:
    proc = subprocess.run([sys.executable, str(REPO / "scripts" / "runtime_ap.py"), *args],
                          capture_output=True, text=True, timeout=540, cwd=REPO)
    assert proc.returncode == 0, f"failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc.stdout


def _check(out: str, results: dict, runtimes: tuple[str, ...]) -> None:
    assert "| runtime | AP | AP50 | ΔAP vs eager |" in out
    for runtime in runtimes:
        assert f"| {runtime} | " in out
        r = results[runtime]
        assert "error" not in r, r
        assert set(r["metrics"]) == {"AP", "AP50", "AP75"} and r["images"] == 4
        assert 0.0 <= r["metrics"]["AP"] <= 1.0 and r["median_s"] > 0
    assert "not run" not in out


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_runtime_ap_quick(tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    runtimes = ("eager", "onnxruntime", "int8")
    out = _run("--quick", "--runtime", *runtimes, "--json", str(tmp_path / "ap.json"))
    _check(out, json.loads((tmp_path / "ap.json").read_text()), runtimes)
    assert "static QDQ" in out


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_runtime_ap_quick_compile(tmp_path: Path) -> None:
    out = _run("--quick", "--runtime", "eager", "compile", "--json", str(tmp_path / "ap.json"))
    _check(out, json.loads((tmp_path / "ap.json").read_text()), ("eager", "compile"))


def test_runtime_ap_needs_a_checkpoint() -> None:
    proc = subprocess.run([sys.executable, str(REPO / "scripts" / "runtime_ap.py")],
                          capture_output=True, text=True, timeout=120, cwd=REPO)
    assert proc.returncode == 2 and "--checkpoint" in proc.stderr
