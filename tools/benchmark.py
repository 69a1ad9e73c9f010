"""Model statistics: parameters, FLOPs at an image size, inference images/s on this device.

    python tools/benchmark.py model=rfcn_r50 image_size=[600,900] [num_classes=81] \
        [device=cuda] [checkpoint=PATH] [runs=10]
"""

from __future__ import annotations

import json
import sys

import hydra
from omegaconf import DictConfig

import rfcn.config as rc
from rfcn.checkpoint import CheckpointError
from rfcn.entrypoints.benchmark import benchmark, format_benchmark


@hydra.main(version_base="1.3", config_path="../configs", config_name="benchmark")
def main(cfg: DictConfig) -> None:
    try:
        rc.unknown_added_keys(cfg, rc.command_line_overrides(), rc.BenchmarkAppConfig)
        stats = benchmark(cfg)
    except (CheckpointError, FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
    print(format_benchmark(stats))
    if cfg.json:
        print(json.dumps(stats))


if __name__ == "__main__":
    main()
