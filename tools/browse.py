"""Look at a dataset before training: statistics, histograms and drawn ground truth.

    python tools/browse.py dataset=coco_json dataset.train.ann_file=... dataset.train.img_dir=...\
        dataset.val.ann_file=... dataset.val.img_dir=... split=train output=DIR [n=16] \
        [transforms=true]
# -> DIR/images/*.jpg, DIR/statistics.{json,txt}, DIR/histograms.png; prints the statistics
"""

from __future__ import annotations

import sys

import hydra
from omegaconf import DictConfig

import rfcn.config as rc
from rfcn.entrypoints.browse import browse


@hydra.main(version_base="1.3", config_path="../configs", config_name="browse")
def main(cfg: DictConfig) -> None:
    try:
        rc.unknown_added_keys(cfg, rc.command_line_overrides(), rc.BrowseAppConfig)
        text = browse(cfg)
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
    print(text)
    print(f"\n-> {cfg.output} (images/, statistics.json, statistics.txt, histograms.png)")


if __name__ == "__main__":
    main()
