"""Export a trained checkpoint: the whole detector (resize, trunk, RPN with NMS, PS score maps,
PS RoI pooling, voting, post-processing; any image size) as one file.

    python tools/export.py checkpoint=PATH format=onnx output=model.onnx   # stock onnxruntime
    python tools/export.py checkpoint=PATH format=pt2 output=model.pt2     # torch.export
# then: python tools/infer.py runtime=onnxruntime model=model.onnx input=... output=...
"""

from __future__ import annotations

import sys

import hydra
from omegaconf import DictConfig

import rfcn.config as rc
from rfcn.checkpoint import CheckpointError
from rfcn.entrypoints.export import export


@hydra.main(version_base="1.3", config_path="../configs", config_name="export")
def main(cfg: DictConfig) -> None:
    try:
        rc.unknown_added_keys(cfg, rc.command_line_overrides(), rc.ExportAppConfig)
        path = export(cfg)
    except (CheckpointError, FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
    print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB)")


if __name__ == "__main__":
    main()
