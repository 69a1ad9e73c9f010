"""What a training process imports before its first iteration (issue 21): every module is
memory in the main process and in each forked worker's page tables, so plotting stays out."""

from __future__ import annotations

import subprocess
import sys

import pytest

# heavy packages used only for plots and reports, imported where they are drawn
NOT_AT_START = ("matplotlib",)


@pytest.mark.parametrize("module", ["rfcn.entrypoints.train", "rfcn.entrypoints.evaluate"])
def test_training_and_evaluation_do_not_import_plotting_at_start(module: str) -> None:
    code = (f"import sys, {module}\n"
            f"print(','.join(m for m in {NOT_AT_START!r} if m in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == "", f"{module} imports {proc.stdout.strip()} at start"
